"""(1)(2)(3) The ceiling and webhook ingest: wrk replays pre-built signed deliveries at 64
connections against a bare FastAPI app, then against the service on PostgreSQL — worker off
(the request path alone), worker on (the request path while the same process drains), and on
the local Supabase stack's database."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import Process, client_limits, cpu_meter, cpu_shares, service_env
from bench.context import Run, log
from bench.load import run_wrk
from bench.payloads import Sender, deliveries, write_request_file
from bench.store import StoreRef, seed


def request_file(run: Run, name: str, count: int, senders: list[Sender], tag: str) -> Path:
    path = run.run_dir / f"{name}.requests"
    write_request_file(path, deliveries(count, senders, run=tag))
    return path


def prebuilt_count(run: Run, expected_rps: float) -> int:
    """Enough unique deliveries for the duration at well above the expected rate."""
    return int(max(5_000, expected_rps * run.options.duration * 2.5))


def ingest_senders(tag: str) -> list[Sender]:
    return [Sender(f"+56998{index:06d}", f"ingest-{tag}-{index}") for index in range(64)]


def measure_ceiling(run: Run, tag: str) -> dict[str, Any]:
    requests = request_file(run, "ceiling", 20_000, [Sender("+56998000000", "ceiling")], tag)
    env = service_env(database_url=None, emulator_url=None, worker_enabled=False)
    server = run.processes.uvicorn("ceiling", "bench.ceiling_app:create_app", env=env)
    try:
        result = run_wrk(
            f"{server.url}/api/whatsapp/webhook",
            requests,
            connections=run.options.connections,
            duration=run.options.duration,
            server_pids={"server": server.pid},
        )
    finally:
        run.processes.stop(server)
        requests.unlink()
    run.ceiling_rps = result["requests_per_s"]
    return result


def measure_ingest(
    run: Run, store: StoreRef, tag: str, *, label: str, postmaster: int | None = None
) -> dict[str, Any]:
    """The service (in-process worker OFF) taking signed deliveries at fixed concurrency."""
    requests = request_file(
        run, f"ingest-{label}", prebuilt_count(run, 4000), ingest_senders(tag), tag
    )
    env = service_env(database_url=store.dsn, emulator_url=None, worker_enabled=False)
    server = run.processes.uvicorn(f"service-ingest-{label}", "app.main:create_app", env=env)
    if store.kind == "embedded":
        postmaster = run.cluster.postmaster_pid
    try:
        with cpu_meter(
            {"service": server.pid}, {"postgres": postmaster} if postmaster else None
        ) as cpu:
            result = run_wrk(
                f"{server.url}/api/whatsapp/webhook",
                requests,
                connections=run.options.connections,
                duration=run.options.duration,
                server_pids={"server": server.pid},
            )
    finally:
        run.processes.stop(server)
        requests.unlink()
    result["worker"] = "off (WORKER_ENABLED=false): the request path alone"
    result["ratio_to_ceiling"] = round(result["requests_per_s"] / run.ceiling_rps, 3)
    result["cpu_share"] = cpu_shares(cpu)
    result["count_check"] = ingest_count_check(run, store, result, f"wamid.bench{tag}", label)
    return result


def ingest_count_check(
    run: Run,
    store: StoreRef,
    result: dict[str, Any],
    prefix: str,
    label: str,
    *,
    states_allowed: frozenset[str] = frozenset({"pending"}),
) -> dict[str, Any]:
    """Every acknowledged delivery is recorded once; nothing else is (no duplicate, no loss)."""
    states = store.inbox_states(prefix)
    recorded = sum(states.values())
    distinct = store.count(
        "select count(distinct wamid) from public.whatsapp_inbox_events where wamid like $1",
        prefix + "%",
    )
    acknowledged = result["requests"] - result["errors"]["non_2xx"]
    # Requests still in flight when wrk stopped may be recorded without wrk counting the answer.
    ok = (
        acknowledged <= recorded <= result["issued"]
        and distinct == recorded
        and not result["reused_prebuilt"]
        and set(states) <= states_allowed
    )
    check = {
        "acknowledged_200": acknowledged,
        "issued": result["issued"],
        "recorded": recorded,
        "distinct_wamids": distinct,
        "states": states,
        "ok": ok,
    }
    if not ok:
        run.fail(f"ingest count check failed ({label}): {check}")
    return check


def open_windows(emulator_url: str, senders: list[Sender], concurrency: int = 16) -> None:
    """Each user writes once at the emulator (no webhook): their 24-hour window is open, so
    the replies to pre-built deliveries are accepted."""

    async def run() -> None:
        limits = client_limits(concurrency)
        async with httpx.AsyncClient(base_url=emulator_url, timeout=60, limits=limits) as client:
            slots = asyncio.Semaphore(concurrency)

            async def one(sender: Sender) -> None:
                async with slots:
                    response = await client.post(
                        "/_emulator/inbound", json={"phone": sender.phone, "text": "Hola"}
                    )
                    response.raise_for_status()

            await asyncio.gather(*(one(sender) for sender in senders))

    asyncio.run(run())


def answering_emulator(run: Run, name: str) -> Process:
    """The emulator with no webhook URL: it accepts sends (and mark-as-read), nothing comes back."""
    env = service_env(database_url=None, emulator_url=None, worker_enabled=False)
    return run.processes.uvicorn(f"emulator-{name}", "bench.emulator_server:create_app", env=env)


def measure_ingest_worker_on(run: Run, tag: str) -> dict[str, Any]:
    """The default deployment's API process (worker ON) under the same load: the request path
    while the worker drains what it records, replying through the emulator. Then: how long the
    worker takes to finish what the load left."""
    store = run.database("ingest_worker")
    users = seed(store, 64, tag)
    senders = [user.sender for user in users]
    prefix = f"wamid.bench{tag}"
    requests = request_file(run, "ingest-worker", prebuilt_count(run, 3000), senders, tag)
    emulator = answering_emulator(run, "ingest-worker")
    assert emulator.url is not None
    open_windows(emulator.url, senders)
    env = service_env(
        database_url=store.dsn,
        emulator_url=emulator.url,
        worker_enabled=True,
        # Pre-built deliveries carry wamids Kapso never issued, so mark-as-read is refused
        # (a logged warning per message); replies are still sent.
        log_level="ERROR",
    )
    server = run.processes.uvicorn("service-ingest-worker", "app.main:create_app", env=env)
    postmaster = run.cluster.postmaster_pid
    try:
        with cpu_meter(
            {"service": server.pid, "emulator": emulator.pid},
            {"postgres": postmaster} if postmaster else None,
        ) as cpu:
            result = run_wrk(
                f"{server.url}/api/whatsapp/webhook",
                requests,
                connections=run.options.connections,
                duration=run.options.duration,
                server_pids={"server": server.pid},
            )
        states_at_end = store.inbox_states(prefix)
        log(
            "ingest, worker on: "
            f"{states_at_end.get('pending', 0) + states_at_end.get('processing', 0):,} "
            "events unfinished when the load ended; waiting for the drain"
        )
        drained_after = wait_drained(store, prefix, timeout=1800)
    finally:
        run.processes.stop(server)
        run.processes.stop(emulator)
        requests.unlink()
    recorded = sum(states_at_end.values())
    unfinished = states_at_end.get("pending", 0) + states_at_end.get("processing", 0)
    done_during_load = recorded - unfinished
    result["worker"] = "on, in the API process (WORKER_ENABLED=true, the default)"
    result["ratio_to_ceiling"] = round(result["requests_per_s"] / run.ceiling_rps, 3)
    result["cpu_share"] = cpu_shares(cpu)
    result["drain"] = {
        "recorded_during_load": recorded,
        "processed_during_load": done_during_load,
        "processed_per_s_during_load": round(done_during_load / result["duration_s"], 1),
        "unfinished_when_load_ended": unfinished,
        "keeps_up": unfinished <= max(100, recorded // 100),
        "drain_after_load_s": round(drained_after, 1),
        "processed_per_s_after_load": round(unfinished / drained_after, 1)
        if drained_after > 0
        else None,
    }
    check = ingest_count_check(
        run, store, result, prefix, "worker on", states_allowed=frozenset({"done"})
    )
    replies = store.count(
        "select count(*) from public.whatsapp_outbound_messages o "
        "join public.whatsapp_inbox_events e on e.id = o.inbox_event_id "
        "where e.wamid like $1 and o.purpose = 'reply' and o.status = 'sent'",
        prefix + "%",
    )
    check["replies_sent"] = replies
    if replies != check["recorded"]:
        check["ok"] = False
        run.fail(f"ingest (worker on): {replies} replies sent for {check['recorded']} events")
    result["count_check"] = check
    run.cluster.drop(store)
    return result


def wait_drained(store: StoreRef, prefix: str | None, *, timeout: float) -> float:
    """Seconds until no event (of `prefix`) is pending or processing."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if set(store.inbox_states(prefix)) <= {"done", "dead"}:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def new_tag() -> str:
    return uuid.uuid4().hex[:6]
