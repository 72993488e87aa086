"""The benchmark suite does not rot: its modules import, and its plumbing works on a real
database — never its speed.

Checked: pre-built signed deliveries the service accepts and records once (counted by the
suite's `CountingDatabase`), backlog events built as the webhook route builds them, the
reading of PostgreSQL's statement log into transactions and round trips, the drain's
per-tenth rates, and the summary of a py-spy profile.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import WEBHOOK_SECRET  # noqa: E402
from bench.payloads import Sender, deliveries  # noqa: E402
from bench.store import StoreRef, user_phone  # noqa: E402

from app.container import build_container  # noqa: E402
from app.core.phone import normalize_phone  # noqa: E402
from app.db.pool import PoolOptions  # noqa: E402
from app.repositories.inbox import InboxStore  # noqa: E402
from app.repositories.stores import Stores  # noqa: E402
from bench import (  # noqa: E402
    ceiling_app,
    context,
    drain,
    driver,
    e2e,
    emulator_server,
    flows,
    ingest,
    load,
    loadgen,
    memory,
    profile,
    roundtrips,
    run,
    stack,
)


def test_modules_import_and_options_parse() -> None:
    modules = (ceiling_app, context, driver, drain, e2e, emulator_server, flows, ingest, load)
    modules += (loadgen, memory, profile, roundtrips, run, stack)
    assert all(module.__doc__ for module in modules)
    options = run.parse_args(["--quick", "--only", "ingest,drain", "--deliveries", "10"])
    assert options.only == {"ingest", "drain"}
    assert options.deliveries == 10
    assert options.duration == 5.0
    assert options.capacity_steps == [50.0, 100.0, 150.0]
    assert options.drain_users * options.drain_per_user == 2_000
    full = run.parse_args([])
    assert full.drain_users * full.drain_per_user == 100_000
    assert full.connections == 64
    assert stack.parse_env("export DATABASE_URL='postgresql://x'\nSUPABASE_URL=http://y\n") == {
        "DATABASE_URL": "postgresql://x",
        "SUPABASE_URL": "http://y",
    }


def test_seeded_phones_are_valid_and_distinct() -> None:
    phones = {user_phone("a1b2c3", index) for index in range(1000)}
    assert len(phones) == 1000
    assert all(normalize_phone(phone) == phone for phone in phones)


async def test_ceiling_app_answers_the_webhook_body() -> None:
    (delivery,) = deliveries(1, [Sender("+56998000001", "conv-ceiling")], run="ceiling")
    transport = httpx.ASGITransport(app=ceiling_app.create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.post(
            "/api/whatsapp/webhook", content=delivery.body, headers=delivery.headers()
        )
    assert response.status_code == 200


async def test_prebuilt_deliveries_are_recorded_once_and_counted(database_url: str) -> None:
    database = await roundtrips.CountingDatabase.connect(
        database_url, PoolOptions(min_size=1, max_size=4)
    )
    assert isinstance(database, roundtrips.CountingDatabase)
    database.start_counting()
    settings = roundtrips.bench_settings("http://127.0.0.1:9", database_url)
    assert settings.kapso_webhook_secret == SecretStr(WEBHOOK_SECRET)
    items = list(deliveries(40, [Sender("+56998000001", "conv-smoke")], run="smoke"))
    try:
        async with build_container(settings, stores=Stores.on(database)) as container:
            summaries = await asyncio.gather(
                *(container.ingest.ingest(item.body, item.headers()) for item in items)
            )
            replayed = await container.ingest.ingest(items[0].body, items[0].headers())
    finally:
        await database.aclose()
    assert [summary.accepted for summary in summaries] == [1] * 40
    assert replayed.duplicates == 1
    counted = roundtrips.client_summary(database.take())
    # The group commit: concurrent deliveries share inserts, each one statement on its own.
    assert set(counted["statements_by_issuer"]) == {"InboxStore._record_batch"}
    assert 1 <= counted["transactions"] == counted["statements"] < 42
    store = StoreRef(database_url)
    assert await store.inbox_states_async("wamid.benchsmoke") == {"pending": 40}


async def test_backlog_events_are_what_the_route_records(database_url: str) -> None:
    senders = [Sender(user_phone("b4", index), f"conv-{index}") for index in range(3)]
    events = list(drain.backlog_events(senders, 2, "wamid.smokedrain"))
    assert [event.conversation_key for event in events] == [f"conv-{i}" for i in (0, 1, 2)] * 2
    recorded, _ = await drain.record_backlog(StoreRef(database_url), iter(events), batch=4)
    assert recorded == 6
    database = await StoreRef(database_url).open(max_size=2)
    try:
        claimed = await InboxStore(database).claim_inbox_events(
            owner="smoke", limit=10, lease_seconds=30, max_attempts=3
        )
    finally:
        await database.aclose()
    # One head per conversation, in arrival order.
    assert [event.wamid for event in claimed] == [events[i].wamid for i in (0, 1, 2)]


def test_the_statement_log_is_read_into_transactions_and_round_trips(tmp_path: Path) -> None:
    prefix = "2026-12-03 13:13:16.160 UTC"
    lines = [
        "LOG:  duration: 0.152 ms  statement: BEGIN;",
        "LOG:  duration: 0.536 ms  parse __asyncpg_stmt_6__: update t set x = 1",
        "LOG:  duration: 0.124 ms  bind __asyncpg_stmt_6__: update t set x = 1",
        "DETAIL:  Parameters: $1 = '5'",
        "LOG:  duration: 0.014 ms  execute __asyncpg_stmt_6__: update t",
        "\t set x = 1",
        "LOG:  duration: 0.020 ms  execute __asyncpg_stmt_7__: select 2",
        "LOG:  duration: 0.049 ms  statement: COMMIT;",
        "LOG:  duration: 0.267 ms  statement: SELECT pg_advisory_unlock_all();",
        "\tCLOSE ALL;",
        "LOG:  duration: 0.033 ms  bind <unnamed>: select 1",
        "LOG:  duration: 0.005 ms  execute <unnamed>: select 1",
        "LOG:  checkpoint starting: time",
    ]
    log_file = tmp_path / "postgres.log"
    log_file.write_text("ignored before the offset\n")
    reader = roundtrips.ServerLog(log_file)
    reader.skip()
    with log_file.open("a") as out:
        for line in lines:
            out.write(line if line.startswith("\t") else f"{prefix} [4242] {line}")
            out.write("\n")
    summary = roundtrips.server_summary(reader.take())
    assert summary == {
        "transactions": 2,  # BEGIN…COMMIT, and the statement run on its own
        "statements": 3,
        "pool_resets": 1,
        "round_trips": 7,  # BEGIN, parse, 2 executes, COMMIT, reset, execute
        "first_time_parses": 1,
        "server_ms": 1.2,
    }
    assert reader.take() == []


def test_drain_rates_per_tenth() -> None:
    # 1,000 events drained at 100/s after a 2 s start-up, sampled every second.
    samples = [(0.0, 1000), (1.0, 1000), (2.0, 1000)]
    samples += [(2.0 + t, 1000 - 100 * t) for t in range(1, 11)]
    times = drain.crossing_times(samples, 1000, 10)
    assert len(times) == 11
    rates = [100 / (times[k] - times[k - 1]) for k in range(2, 11)]
    assert all(abs(rate - 100) < 1e-6 for rate in rates)


def test_a_py_spy_profile_is_summarised(tmp_path: Path) -> None:
    document = {
        "shared": {
            "frames": [
                {"name": "run", "file": "/x/site-packages/uvicorn/server.py", "line": 1},
                {"name": "ingest", "file": "/w/backend/app/services/ingest.py", "line": 10},
                {"name": "fetch", "file": "/x/site-packages/asyncpg/pool.py", "line": 5},
                {"name": "ingest", "file": "/w/backend/app/services/ingest.py", "line": 12},
            ]
        },
        "profiles": [
            {
                "type": "sampled",
                "name": "MainThread",
                "samples": [[0, 1, 2], [0, 3], [0, 1], [0]],
                "weights": [1, 1, 1, 1],
            }
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(document))
    summary = profile.summarise(path, seconds=1.0, rate=4)
    assert summary["samples"] == 4
    assert summary["cpu_busy"] == 1.0
    top_self = {row["function"]: row["share"] for row in summary["top_self"]}
    assert top_self["ingest (app/services/ingest.py)"] == 0.5
    top_total = {row["function"]: row["share"] for row in summary["top_total"]}
    assert top_total["run (uvicorn/server.py)"] == 1.0
    assert top_total["ingest (app/services/ingest.py)"] == 0.75
    assert summary["self_by_layer"] == {"our code (app)": 0.5, "asyncpg": 0.25, "uvicorn": 0.25}
    assert summary["by_component"] == summary["self_by_layer"]
