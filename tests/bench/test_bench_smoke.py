"""The benchmark suite does not rot: its modules import, and a tiny ingest measurement runs.

Not a timed test: it checks the benchmark's own plumbing (pre-built signed deliveries the
service accepts, the counting repository, the count check), never speed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.payloads import Sender, deliveries  # noqa: E402
from bench.roundtrips import CountingRepository, bench_settings, summarise  # noqa: E402
from bench.store import StoreRef  # noqa: E402

from app.container import build_container  # noqa: E402
from app.repositories.whatsapp import WhatsAppRepository  # noqa: E402
from bench import ceiling_app, e2e, emulator_server, load, loadgen, run, stack  # noqa: E402


def test_modules_import_and_options_parse() -> None:
    assert all(module.__doc__ for module in (e2e, emulator_server, load, loadgen, stack))
    options = run.parse_args(["--quick", "--only", "ingest,memory", "--deliveries", "10"])
    assert options.only == {"ingest", "memory"}
    assert options.deliveries == 10
    assert options.duration == 5.0


async def test_ceiling_app_answers_the_webhook_body() -> None:
    (delivery,) = deliveries(1, [Sender("+56998000001", "conv-ceiling")], run="ceiling")
    transport = httpx.ASGITransport(app=ceiling_app.create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.post(
            "/api/whatsapp/webhook", content=delivery.body, headers=delivery.headers()
        )
    assert response.status_code == 200


async def test_prebuilt_deliveries_are_recorded_once_and_counted(tmp_path: Path) -> None:
    store = StoreRef("sqlite", sqlite_path=tmp_path / "bench.sqlite3")
    inner = await store.open()
    counting = CountingRepository(inner)
    settings = bench_settings(store, "http://127.0.0.1:9", tmp_path)
    items = list(deliveries(40, [Sender("+56998000001", "conv-smoke")], run="smoke"))
    try:
        async with build_container(
            settings, repository=cast(WhatsAppRepository, counting)
        ) as container:
            assert await counting.instrument() == "sql_statements"
            summaries = await asyncio.gather(
                *(container.ingest.ingest(item.body, item.headers()) for item in items)
            )
    finally:
        await inner.aclose()
    assert [summary.accepted for summary in summaries] == [1] * 40
    counted = summarise(counting.take())
    assert counted["by_method"] == {"record_inbox_events": 40}
    assert counted["low_level"] > 0
    assert store.inbox_states("wamid.benchsmoke") == {"pending": 40}
