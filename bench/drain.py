"""(6) Draining a deep backlog: events recorded straight into the inbox, then N
`whatsapp-worker` processes process them (replies accepted by the emulator), and the drain
rate is read per tenth of the backlog — it must not fall as the backlog shrinks (the old
SQLite claim fell to ~25 events/s past a 50k backlog)."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from app.integrations.kapso.api.webhooks import parse_webhook
from app.repositories.inbox import InboxStore
from app.repositories.models import NewInboxEvent
from app.services.whatsapp.webhook_ingest import to_inbox_events
from bench.common import (
    Process,
    cpu_seconds,
    process_tree_cpu_seconds,
    rss_bytes,
    service_env,
)
from bench.context import Run, log
from bench.ingest import answering_emulator, new_tag, open_windows
from bench.payloads import EVENT, Sender, message_received
from bench.store import StoreRef, seed


def worker_argv() -> list[str]:
    """`whatsapp-worker`, the console script `uv run whatsapp-worker` runs."""
    script = Path(sys.executable).parent / "whatsapp-worker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.worker"]


def backlog_events(senders: list[Sender], per_user: int, prefix: str) -> Iterator[NewInboxEvent]:
    """The inbox rows the service records for these deliveries (parsed as the webhook route
    parses them), interleaved across conversations as real traffic arrives."""
    headers = {"x-webhook-event": EVENT, "x-webhook-payload-version": "v2"}
    for round_ in range(per_user):
        for index, sender in enumerate(senders):
            wamid = f"{prefix}{round_:03d}{index:06d}"
            body = json.dumps(
                message_received(sender, wamid, f"Mensaje {round_}"), separators=(",", ":")
            ).encode()
            parsed = parse_webhook(body, event=EVENT, batch_header=None, payload_version="v2")
            yield from to_inbox_events(
                parsed, body, {**headers, "x-idempotency-key": str(uuid.uuid4())}
            )


async def record_backlog(
    store: StoreRef, events: Iterator[NewInboxEvent], batch: int
) -> tuple[int, float]:
    """Record the events with `InboxStore.record_inbox_events`, `batch` per call.

    Returns how many, and the seconds spent in the store (building them is not counted)."""
    database = await store.open(max_size=4)
    try:
        inbox = InboxStore(database)
        recorded, seconds = 0, 0.0
        while chunk := list(itertools.islice(events, batch)):
            started = time.monotonic()
            results = await inbox.record_inbox_events(chunk)
            seconds += time.monotonic() - started
            if not all(result.is_new for result in results):
                raise RuntimeError("a backlog event was recorded twice")
            recorded += len(chunk)
        return recorded, seconds
    finally:
        await database.aclose()


async def monitor(
    store: StoreRef,
    total: int,
    workers: list[Process],
    postmaster: int | None,
    emulator: Process,
    *,
    interval: float,
    give_up_after: float,
) -> dict[str, Any]:
    """Sample the unfinished events (and the workers' RSS) until none is left."""
    connection = await asyncpg.connect(store.dsn)
    samples: list[tuple[float, int]] = []
    rss: dict[str, list[int]] = {f"worker-{i}": [] for i in range(len(workers))}
    cpu_before = {f"worker-{i}": cpu_seconds(w.pid) for i, w in enumerate(workers)}
    cpu_before["emulator"] = cpu_seconds(emulator.pid)
    if postmaster:
        cpu_before["postgres"] = process_tree_cpu_seconds(postmaster)
    started = time.monotonic()
    try:
        while True:
            remaining = int(
                await connection.fetchval(
                    "select count(*) from public.whatsapp_inbox_events "
                    "where state in ('pending', 'processing')"
                )
            )
            now = time.monotonic() - started
            samples.append((now, remaining))
            for i, worker in enumerate(workers):
                if worker.popen.poll() is None:
                    rss[f"worker-{i}"].append(rss_bytes(worker.pid))
            if remaining == 0 or now > give_up_after:
                break
            if any(worker.popen.poll() is not None for worker in workers):
                raise RuntimeError(
                    "a worker exited during the drain:\n"
                    + "\n".join(w.log_tail() for w in workers if w.popen.poll() is not None)
                )
            await asyncio.sleep(interval)
    finally:
        await connection.close()
    wall = time.monotonic() - started
    cpu = {f"worker-{i}": cpu_seconds(w.pid) for i, w in enumerate(workers)}
    cpu["emulator"] = cpu_seconds(emulator.pid)
    if postmaster:
        cpu["postgres"] = process_tree_cpu_seconds(postmaster)
    return {
        "samples": samples,
        "rss": rss,
        "cpu_share": {name: round((cpu[name] - cpu_before[name]) / wall, 2) for name in cpu},
        "wall": wall,
    }


def crossing_times(samples: list[tuple[float, int]], total: int, parts: int) -> list[float]:
    """When the remaining count fell to total·(1 − k/parts), k = 0..parts (interpolated);
    k = 0 is the first completion."""
    marks = [total - 1] + [round(total * (1 - k / parts)) for k in range(1, parts + 1)]
    times: list[float] = []
    for mark in marks:
        previous = samples[0]
        for sample in samples:
            if sample[1] <= mark:
                t0, r0 = previous
                t1, r1 = sample
                if r0 == r1 or t1 == t0:
                    times.append(t1)
                else:
                    times.append(t0 + (t1 - t0) * (r0 - mark) / (r0 - r1))
                break
            previous = sample
        else:
            times.append(float("nan"))
    return times


def measure_drain(run: Run) -> dict[str, Any]:
    options = run.options
    store = run.database("drain")
    tag = new_tag()
    prefix = f"wamid.drain{tag}"
    total = options.drain_users * options.drain_per_user
    log(f"drain: seeding {options.drain_users:,} users")
    users = seed(store, options.drain_users, tag)
    senders = [user.sender for user in users]
    emulator = answering_emulator(run, "drain")
    assert emulator.url is not None
    open_windows(emulator.url, senders)
    log(f"drain: recording {total:,} events ({options.drain_users:,} × {options.drain_per_user})")
    events = backlog_events(senders, options.drain_per_user, prefix)
    recorded, record_seconds = asyncio.run(record_backlog(store, events, 1000))
    assert recorded == total
    env = service_env(
        database_url=store.dsn,
        emulator_url=emulator.url,
        worker_enabled=False,
        # Pre-built events carry wamids Kapso never issued, so mark-as-read is refused (a
        # logged warning per message); replies are still sent.
        log_level="ERROR",
    )
    log(f"drain: {options.drain_workers} whatsapp-worker processes")
    workers = [
        run.processes.start(f"worker-drain-{i}", worker_argv(), env=env)
        for i in range(options.drain_workers)
    ]
    try:
        watched = asyncio.run(
            monitor(
                store,
                total,
                workers,
                run.cluster.postmaster_pid,
                emulator,
                interval=0.5,
                give_up_after=3600,
            )
        )
    finally:
        for worker in workers:
            run.processes.stop(worker)
        run.processes.stop(emulator)
    samples: list[tuple[float, int]] = watched["samples"]
    times = crossing_times(samples, total, 10)
    tenth = total / 10
    deciles = [
        round(tenth / (times[k] - times[k - 1]), 1) if times[k] > times[k - 1] else None
        for k in range(1, 11)
    ]
    drained = samples[-1][1] == 0
    overall = total / (times[10] - times[0]) if drained and times[10] > times[0] else 0.0
    rates = [rate for rate in deciles if rate is not None]
    first, last = (rates[0], rates[-1]) if rates else (0.0, 0.0)
    states = store.inbox_states(prefix)
    replies = store.count(
        "select count(*) from public.whatsapp_outbound_messages "
        "where purpose = 'reply' and status = 'sent'"
    )
    check = {
        "states": states,
        "replies_sent": replies,
        "ok": states == {"done": total} and replies == total,
    }
    if not check["ok"]:
        run.fail(f"drain count check failed: {check}")
    rss = {}
    for name, values in watched["rss"].items():
        quarter = max(1, len(values) // 4)
        first_q = sum(values[:quarter]) / quarter if values else 0
        last_q = sum(values[-quarter:]) / quarter if values else 0
        rss[name] = {
            "peak_mb": round(max(values) / 2**20, 1) if values else 0,
            "growth_first_to_last_quarter": round(last_q / first_q - 1, 3) if first_q else 0,
        }
    run.cluster.drop(store)
    return {
        "backlog": total,
        "conversations": options.drain_users,
        "events_per_conversation": options.drain_per_user,
        "workers": options.drain_workers,
        "worker_concurrency_each": 8,
        "recorded_in_s": round(record_seconds, 1),
        "recorded_per_s": round(total / record_seconds, 1) if record_seconds else None,
        "first_completion_after_s": round(times[0], 1),
        "drained": drained,
        "drain_s": round(times[10] - times[0], 1) if drained else None,
        "events_per_s_overall": round(overall, 1),
        "events_per_s_by_tenth": deciles,
        "first_tenth_per_s": first,
        "last_tenth_per_s": last,
        "min_tenth_per_s": min(rates) if rates else 0.0,
        "last_to_first": round(last / first, 2) if first else 0.0,
        "cpu_share": watched["cpu_share"],
        "worker_rss": rss,
        "count_check": check,
    }
