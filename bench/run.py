"""`python -m bench.run`: every measurement of issue 7 in one run (./scripts/bench.sh runs it).

Writes bench/results/<YYYY-MM-DD>.json and prints a table. Benchmarks never fail on speed;
the exit status is non-zero only when a measurement could not run or a count check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    JWT_SECRET,
    KAPSO_API_KEY,
    PHONE_NUMBER_ID,
    ROOT,
    UVICORN_ARGS,
    Process,
    Processes,
    cpu_meter,
    rss_bytes,
    service_env,
)
from bench.e2e import drive, warm_up
from bench.load import run_wrk
from bench.payloads import Sender, deliveries, write_request_file
from bench.roundtrips import count_round_trips
from bench.stack import private_supabase
from bench.store import KnownUser, StoreRef, seed_users

RESULTS = ROOT / "bench" / "results"


@dataclass
class Options:
    quick: bool
    duration: float
    connections: int
    deliveries: int
    worker_deliveries: int
    e2e_rate: float
    e2e_seconds: float
    e2e_users: int
    saturation_messages: int
    send_seconds: float
    send_concurrency: int
    only: set[str]
    output: Path | None
    merge: bool


@dataclass
class Run:
    options: Options
    run_dir: Path
    processes: Processes
    ceiling_rps: float = 0.0
    failures: list[str] | None = None

    def fail(self, message: str) -> None:
        print(f"!! {message}", file=sys.stderr)
        if self.failures is None:
            self.failures = []
        self.failures.append(message)


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


# --- (1)(2)(3) ceiling and webhook ingest ------------------------------------------------------


def request_file(run: Run, name: str, count: int, senders: list[Sender], tag: str) -> Path:
    path = run.run_dir / f"{name}.requests"
    write_request_file(path, deliveries(count, senders, run=tag))
    return path


def prebuilt_count(run: Run, expected_rps: float) -> int:
    """Enough unique deliveries for the duration at well above the expected rate."""
    return int(max(5_000, expected_rps * run.options.duration * 2.5))


def measure_ceiling(run: Run, requests: Path) -> dict[str, Any]:
    env = service_env(run_dir=run.run_dir, store="sqlite", emulator_url=None, worker_enabled=False)
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
    run.ceiling_rps = result["requests_per_s"]
    return result


def measure_ingest(run: Run, store: StoreRef, env: dict[str, str], tag: str) -> dict[str, Any]:
    """The service (in-process worker OFF) taking signed deliveries at fixed concurrency."""
    senders = [Sender(f"+56998{index:06d}", f"ingest-{tag}-{index}") for index in range(64)]
    requests = request_file(run, f"ingest-{store.kind}", prebuilt_count(run, 3000), senders, tag)
    server = run.processes.uvicorn(f"service-ingest-{store.kind}", "app.main:create_app", env=env)
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
    result["worker"] = "off (WORKER_ENABLED=false): the request path alone"
    result["ratio_to_ceiling"] = round(result["requests_per_s"] / run.ceiling_rps, 3)
    result["count_check"] = ingest_count_check(run, store, result, f"wamid.bench{tag}")
    return result


def ingest_count_check(
    run: Run, store: StoreRef, result: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Every acknowledged delivery is recorded once; nothing else is (no duplicate, no loss)."""
    states = store.inbox_states(prefix)
    recorded = sum(states.values())
    distinct = store.count(
        "select count(distinct wamid) from whatsapp_inbox_events "  # noqa: S608
        f"where wamid like '{prefix}%'"
    )
    acknowledged = result["requests"] - result["errors"]["non_2xx"]
    # Requests still in flight when wrk stopped may be recorded without wrk counting the answer.
    ok = (
        acknowledged <= recorded <= result["issued"]
        and distinct == recorded
        and not result["reused_prebuilt"]
        and set(states) <= {"pending"}
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
        run.fail(f"ingest count check failed on {store.kind}: {check}")
    return check


# --- (4) end to end ------------------------------------------------------------------------------


@contextlib.contextmanager
def flow(
    run: Run, store: StoreRef, name: str, supabase: dict[str, str] | None = None
) -> Iterator[tuple[Process, Process]]:
    """The emulator and the service (worker ON), wired both ways."""
    env = service_env(run_dir=run.run_dir, store=store.kind, emulator_url=None, worker_enabled=True)
    emulator_port_env = dict(env)
    # The service's port is not known before it starts: start it first, pointing at the
    # emulator's port chosen now.
    from bench.common import free_port

    emulator_port = free_port()
    service_env_ = service_env(
        run_dir=run.run_dir,
        store=store.kind,
        emulator_url=f"http://127.0.0.1:{emulator_port}",
        worker_enabled=True,
        supabase=supabase,
        SQLITE_PATH=str(store.sqlite_path) if store.sqlite_path else "",
    )
    service = run.processes.uvicorn(f"service-{name}", "app.main:create_app", env=service_env_)
    emulator_port_env["BENCH_EMULATOR_WEBHOOK_URL"] = f"{service.url}/api/whatsapp/webhook"
    emulator = run.processes.start(
        f"emulator-{name}",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.emulator_server:create_app",
            "--factory",
            "--port",
            str(emulator_port),
            *UVICORN_ARGS,
        ],
        env=emulator_port_env,
        url=f"http://127.0.0.1:{emulator_port}",
        ready_path="/health",
    )
    try:
        yield service, emulator
    finally:
        run.processes.stop(emulator)
        run.processes.stop(service)


def e2e_count_check(run: Run, store: StoreRef, results: list[dict[str, Any]]) -> dict[str, Any]:
    states = store.inbox_states()
    inbound = store.count("select count(*) from messages where role = 'user'")
    replies = store.count("select count(*) from whatsapp_outbound_messages where purpose = 'reply'")
    sent = store.count(
        "select count(*) from whatsapp_outbound_messages "
        "where purpose = 'reply' and status in ('sent', 'delivered', 'read')"
    )
    emulator_ok = all(
        r["replied"] == r["messages"] and r["replies_total"] == r["messages"] for r in results
    )
    ok = set(states) <= {"done"} and inbound == replies == sent and emulator_ok
    check = {
        "inbox_states": states,
        "stored_inbound_messages": inbound,
        "recorded_replies": replies,
        "replies_accepted_by_kapso": sent,
        "every_message_answered_exactly_once_at_the_emulator": emulator_ok,
        "ok": ok,
    }
    if not ok:
        run.fail(f"end-to-end count check failed: {check}")
    return check


def measure_e2e(run: Run) -> dict[str, Any]:
    options = run.options
    store = StoreRef("sqlite", sqlite_path=run.run_dir / "e2e.sqlite3")
    tag = uuid.uuid4().hex[:6]
    users = asyncio.run(_seed(store, options.e2e_users, tag))
    single = [users[0].sender]
    many = [user.sender for user in users]
    with flow(run, store, "e2e") as (service, emulator):
        assert emulator.url is not None
        emulator_url = emulator.url
        asyncio.run(_warm_up(emulator_url, many))
        steady_count = int(options.e2e_rate * options.e2e_seconds)
        low_rate = max(1.0, options.e2e_rate / 5)

        def phase(label: str, senders: list[Sender], rate: float | None, count: int) -> Any:
            log(f"e2e: {label}")
            with cpu_meter(service.pid, emulator.pid) as cpu:
                result = asyncio.run(drive(emulator_url, senders, rate=rate, count=count))
            result["cpu_share"] = {
                "service": round(cpu[str(service.pid)] / cpu["wall"], 2),
                "emulator": round(cpu[str(emulator.pid)] / cpu["wall"], 2),
            }
            settle(store, emulator_url)  # the replies' status events, before the next phase
            return result

        steady_low = phase(
            f"{low_rate:g} msg/s, {len(many)} users",
            many,
            low_rate,
            int(low_rate * options.e2e_seconds),
        )
        steady_one = phase(
            f"{options.e2e_rate:g} msg/s, one user", single, options.e2e_rate, steady_count
        )
        steady_many = phase(
            f"{options.e2e_rate:g} msg/s, {len(many)} users", many, options.e2e_rate, steady_count
        )
        saturation = phase(
            f"saturation, {options.saturation_messages} messages, {len(many)} users",
            many,
            None,
            options.saturation_messages,
        )
        runs = [steady_low, steady_one, steady_many, saturation]
        check = e2e_count_check(run, store, runs)
    return {
        "store": "sqlite",
        "worker": "in the API process (WORKER_ENABLED=true, the default)",
        "steady_low_rate_many_users": steady_low,
        "steady_one_user": steady_one,
        "steady_many_users": steady_many,
        "saturation_many_users": saturation,
        "count_check": check,
    }


def settle(store: StoreRef, emulator_url: str, timeout: float = 600) -> float:
    """Wait until the emulator has nothing left to deliver and the inbox nothing to do."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending = httpx.get(f"{emulator_url}/_emulator/health", timeout=30).json()["pending_tasks"]
        if pending == 0 and set(store.inbox_states()) <= {"done", "dead"}:
            break
        time.sleep(0.5)
    return time.monotonic() - started


async def _seed(store: StoreRef, count: int, tag: str) -> list[KnownUser]:
    repository = await store.open()
    try:
        return await seed_users(repository, count, tag=tag)
    finally:
        await repository.aclose()


async def _warm_up(emulator_url: str, senders: list[Sender]) -> None:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60) as client:
        await warm_up(client, senders)


# --- (5) send API --------------------------------------------------------------------------------


def loadgen(url: str, body: dict[str, Any], headers: dict[str, str], options: Options) -> Any:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--body",
        json.dumps(body),
        "--concurrency",
        str(options.send_concurrency),
        "--duration",
        str(options.send_seconds),
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backend")])}
    output = subprocess.run(  # noqa: S603 - our own argv
        argv, env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(output)


def measure_send(run: Run) -> dict[str, Any]:
    import jwt

    store = StoreRef("sqlite", sqlite_path=run.run_dir / "send.sqlite3")
    (user,) = asyncio.run(_seed(store, 1, uuid.uuid4().hex[:6]))
    with flow(run, store, "send") as (service, emulator):
        assert emulator.url is not None
        assert service.url is not None
        asyncio.run(_warm_up(emulator.url, [user.sender]))  # the user writes first: window open
        settle(store, emulator.url)
        # Kapso's status webhooks stay on for both halves, as in production: each send comes
        # back as sent, delivered and read deliveries that the service records and processes.
        now = int(time.time())
        token = jwt.encode(
            {
                "sub": str(user.user_id),
                "role": "authenticated",
                "aud": "authenticated",
                "iat": now,
                "exp": now + 3600,
            },
            JWT_SECRET,
            algorithm="HS256",
        )
        text = "Tu declaración de IVA de este mes está lista para revisar."
        log(f"send API: POST /api/whatsapp/send/text for {run.options.send_seconds:g} s")
        api = loadgen(
            f"{service.url}/api/whatsapp/send/text",
            {"conversation_selector": {"phone_number": user.sender.phone}, "content": text},
            {"Authorization": f"Bearer {token}"},
            run.options,
        )
        settle(store, emulator.url)
        log(f"send API: raw httpx calls to the emulator for {run.options.send_seconds:g} s")
        raw = loadgen(
            f"{emulator.url}/meta/whatsapp/v24.0/{PHONE_NUMBER_ID}/messages",
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": user.sender.phone.lstrip("+"),
                "type": "text",
                "text": {"body": text},
            },
            {"X-API-Key": KAPSO_API_KEY},
            run.options,
        )
        settle(store, emulator.url)
        stored = store.count(
            "select count(*) from whatsapp_outbound_messages where purpose = 'api' "
            "and status in ('sent', 'delivered', 'read')"
        )
    ratio = api["requests_per_s"] / raw["requests_per_s"] if raw["requests_per_s"] else 0.0
    check = {"api_200": api["ok"], "recorded_sends": stored, "ok": stored == api["ok"]}
    if not check["ok"]:
        run.fail(f"send API count check failed: {check}")
    return {"send_api": api, "raw_emulator": raw, "ratio": round(ratio, 3), "count_check": check}


# --- (6) round trips -----------------------------------------------------------------------------


def measure_round_trips(run: Run, store: StoreRef) -> dict[str, Any]:
    env = service_env(run_dir=run.run_dir, store="sqlite", emulator_url=None, worker_enabled=False)
    emulator = run.processes.uvicorn(
        f"emulator-rt-{store.kind}", "bench.emulator_server:create_app", env=env
    )
    try:
        assert emulator.url is not None
        return asyncio.run(count_round_trips(store, emulator.url, run.run_dir))
    finally:
        run.processes.stop(emulator)


# --- (7) memory ----------------------------------------------------------------------------------


class Sampler:
    """RSS of some processes, sampled on a thread every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self.started
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    self.samples[name].append((now, rss_bytes(pid)))
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, samples in self.samples.items():
            values = [rss for _, rss in samples]
            quarter = max(1, len(values) // 4)
            first = sum(values[:quarter]) / quarter
            last = sum(values[-quarter:]) / quarter
            out[name] = {
                "samples": len(values),
                "start_mb": round(values[0] / 2**20, 1) if values else 0,
                "peak_mb": round(max(values) / 2**20, 1) if values else 0,
                "first_quarter_mean_mb": round(first / 2**20, 1),
                "last_quarter_mean_mb": round(last / 2**20, 1),
                "growth_first_to_last_quarter": round(last / first - 1, 3) if first else 0,
            }
        return out


def measure_memory(run: Run) -> dict[str, Any]:
    """RSS through long runs: the API alone taking N deliveries (worker off), then a
    `whatsapp-worker` process handling M deliveries while the API takes them, until drained."""
    options = run.options
    api_run = _memory_run(run, "api", options.deliveries, with_worker=False)
    worker_run = _memory_run(run, "worker", options.worker_deliveries, with_worker=True)
    return {
        "deliveries": options.deliveries,
        "rss": {"api": api_run["rss"]["api"], "worker": worker_run["rss"]["worker"]},
        "api_run": api_run,
        "worker_run": worker_run,
        "count_check": {
            "api_run": api_run["count_check"],
            "worker_run": worker_run["count_check"],
            "ok": api_run["count_check"]["ok"] and worker_run["count_check"]["ok"],
        },
    }


def _memory_run(run: Run, name: str, count: int, *, with_worker: bool) -> dict[str, Any]:
    options = run.options
    store = StoreRef("sqlite", sqlite_path=run.run_dir / f"memory-{name}.sqlite3")
    tag = uuid.uuid4().hex[:6]
    prefix = f"wamid.bench{tag}"
    users = asyncio.run(_seed(store, 32, tag))
    emulator_env = service_env(
        run_dir=run.run_dir, store="sqlite", emulator_url=None, worker_enabled=False
    )
    # No webhook URL: the emulator's status events for the replies are not what is measured.
    emulator = run.processes.uvicorn(
        f"emulator-memory-{name}", "bench.emulator_server:create_app", env=emulator_env
    )
    assert emulator.url is not None
    env = service_env(
        run_dir=run.run_dir,
        store="sqlite",
        emulator_url=emulator.url,
        worker_enabled=False,
        SQLITE_PATH=str(store.sqlite_path),
        # Pre-built deliveries carry wamids Kapso never issued, so mark-as-read is refused
        # (a logged warning per message); replies are still sent.
        LOG_LEVEL="ERROR",
    )
    try:
        # Open each user's 24-hour window at the emulator (as if they had written).
        asyncio.run(_open_windows(emulator.url, [user.sender for user in users]))
        requests = request_file(run, f"memory-{name}", count, [u.sender for u in users], tag)
        api = run.processes.uvicorn(f"service-memory-{name}", "app.main:create_app", env=env)
        pids = {"api": api.pid}
        if with_worker:
            worker = run.processes.start(
                f"worker-memory-{name}", [sys.executable, "-m", "app.worker"], env=env
            )
            pids["worker"] = worker.pid
            _wait_settled_rss(worker.pid)  # its imports and start-up are not growth
        assert api.url is not None
        log(f"memory: {count} deliveries; sampling RSS of {' and '.join(pids)}")
        with Sampler(pids) as sampler:
            result = run_wrk(
                f"{api.url}/api/whatsapp/webhook",
                requests,
                connections=options.connections,
                duration=3600,
                once=True,
                server_pids=pids,
            )
            drained_at = _wait_drained(store, prefix, timeout=3600) if with_worker else 0.0
        requests.unlink()
        states = store.inbox_states(prefix)
        recorded = sum(states.values())
        distinct = store.count(
            "select count(distinct wamid) from whatsapp_inbox_events "  # noqa: S608
            f"where wamid like '{prefix}%'"
        )
        check: dict[str, Any] = {"states": states, "recorded": recorded, "distinct": distinct}
        if with_worker:
            replies = store.count(
                "select count(*) from whatsapp_outbound_messages o join whatsapp_inbox_events e "  # noqa: S608 - our own prefix
                f"on e.id = o.inbox_event_id where e.wamid like '{prefix}%' "
                "and o.purpose = 'reply' and o.status = 'sent'"
            )
            check["replies_sent"] = replies
            check["ok"] = set(states) <= {"done"} and replies == recorded == distinct >= count
        else:
            check["ok"] = set(states) <= {"pending"} and recorded == distinct >= count
        if not check["ok"]:
            run.fail(f"memory run ({name}) count check failed: {check}")
        return {
            "deliveries": count,
            "worker": "a whatsapp-worker process" if with_worker else "off (API alone)",
            "ingest": result,
            "worker_drained_after_s": round(drained_at, 1),
            "rss": sampler.summary(),
            "count_check": check,
        }
    finally:
        run.processes.stop_all()


def _wait_settled_rss(pid: int, timeout: float = 20.0) -> None:
    """Wait until a starting process's RSS stops changing (start-up done)."""
    started = time.monotonic()
    previous = rss_bytes(pid)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        current = rss_bytes(pid)
        if time.monotonic() - started > 2 and abs(current - previous) < previous * 0.005:
            return
        previous = current


async def _open_windows(emulator_url: str, senders: list[Sender]) -> None:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=30) as client:
        for sender in senders:
            response = await client.post(
                "/_emulator/inbound", json={"phone": sender.phone, "text": "Hola"}
            )
            response.raise_for_status()


def _wait_drained(store: StoreRef, prefix: str, *, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        states = store.inbox_states(prefix)
        if set(states) <= {"done", "dead"}:
            break
        time.sleep(1)
    return time.monotonic() - started


# --- orchestration ---------------------------------------------------------------------------


def measure_all(run: Run) -> dict[str, Any]:
    options = run.options
    results: dict[str, Any] = {}
    tag = uuid.uuid4().hex[:6]
    want = options.only or {"ingest", "supabase", "e2e", "send", "roundtrips", "memory"}

    if want & {"ingest", "supabase"}:
        log(f"ceiling: bare FastAPI, {options.connections} connections, {options.duration:g} s")
        ceiling_senders = [Sender("+56998000000", "ceiling")]
        ceiling_requests = request_file(run, "ceiling", 20_000, ceiling_senders, "c" + tag)
        results["ceiling"] = measure_ceiling(run, ceiling_requests)
        ceiling_requests.unlink()

    if "ingest" in want:
        log("ingest: the service on the embedded SQLite store")
        store = StoreRef("sqlite", sqlite_path=run.run_dir / "ingest.sqlite3")
        env = service_env(
            run_dir=run.run_dir,
            store="sqlite",
            emulator_url=None,
            worker_enabled=False,
            SQLITE_PATH=str(store.sqlite_path),
        )
        results["ingest_sqlite"] = measure_ingest(run, store, env, "s" + tag)

    if want & {"supabase", "roundtrips"}:
        log("local Supabase: a private stack for this run")
        with private_supabase() as supabase:
            store = StoreRef("supabase", supabase=supabase)
            # Round trips first: the ingest run leaves thousands of pending events behind,
            # which the round-trip run's worker would otherwise process.
            if "roundtrips" in want:
                log("round trips per inbound message: Supabase")
                results.setdefault("round_trips", {})["supabase"] = measure_round_trips(run, store)
            if "supabase" in want:
                log("ingest: the service on the local Supabase stack")
                env = service_env(
                    run_dir=run.run_dir,
                    store="supabase",
                    emulator_url=None,
                    worker_enabled=False,
                    supabase=supabase,
                )
                results["ingest_supabase"] = measure_ingest(run, store, env, "p" + tag)
    if "roundtrips" in want:
        log("round trips per inbound message: SQLite")
        store = StoreRef("sqlite", sqlite_path=run.run_dir / "roundtrips.sqlite3")
        results.setdefault("round_trips", {})["sqlite"] = measure_round_trips(run, store)

    if "ingest" in want and "ceiling" in results:
        ceiling = results["ceiling"]
        results["generator"] = {
            "tool": "wrk (C, 1 thread, Lua script over pre-built requests)",
            "against_ceiling_rps": ceiling["requests_per_s"],
            "wrk_cpu_share_at_ceiling": round(
                ceiling["cpu_seconds"]["wrk"] / ceiling["duration_s"], 2
            ),
            "note": "wrk reaches the ceiling's rate with part of one core; every service run "
            "is far below it, so the generator is not what limits the service.",
        }
    if "e2e" in want:
        results["e2e"] = measure_e2e(run)
    if "send" in want:
        results["send"] = measure_send(run)
    if "memory" in want:
        results["memory"] = measure_memory(run)
    return results


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: str, met: bool) -> None:
        rows.append({"target": name, "wanted": target, "measured": value, "met": met})

    if "ingest_sqlite" in results:
        r = results["ingest_sqlite"]
        add(
            "ingest, SQLite: share of ceiling",
            ">= 40%",
            f"{r['ratio_to_ceiling']:.0%}",
            r["ratio_to_ceiling"] >= 0.4,
        )
        add(
            "ingest, SQLite: p99",
            "<= 50 ms",
            f"{r['latency_ms']['p99']} ms",
            r["latency_ms"]["p99"] <= 50,
        )
    if "ingest_supabase" in results:
        r = results["ingest_supabase"]
        add(
            "ingest, Supabase: share of ceiling",
            ">= 20%",
            f"{r['ratio_to_ceiling']:.0%}",
            r["ratio_to_ceiling"] >= 0.2,
        )
        add(
            "ingest, Supabase: p99",
            "<= 100 ms",
            f"{r['latency_ms']['p99']} ms",
            r["latency_ms"]["p99"] <= 100,
        )
    if "e2e" in results:
        for key, label in (("steady_many_users", "users"), ("steady_one_user", "one user")):
            r = results["e2e"][key]
            lat = r["latency_ms"]
            add(
                f"e2e at {r['target_rate_per_s']:g}/s ({r['users']} {label}): p50",
                "<= 50 ms",
                f"{lat['p50']} ms",
                lat["p50"] <= 50,
            )
            add(
                f"e2e at {r['target_rate_per_s']:g}/s ({r['users']} {label}): p99",
                "<= 250 ms",
                f"{lat['p99']} ms",
                lat["p99"] <= 250,
            )
    if "send" in results:
        ratio = results["send"]["ratio"]
        add("send API: share of raw client", ">= 50%", f"{ratio:.0%}", ratio >= 0.5)
    for kind, r in results.get("round_trips", {}).items():
        n = r["per_inbound_message"]
        add(f"store round trips per inbound message ({kind})", "<= 4", str(n), n <= 4)
    if "memory" in results:
        api = results["memory"]["rss"]["api"]
        add("memory: API peak RSS", "<= 150 MB", f"{api['peak_mb']} MB", api["peak_mb"] <= 150)
        for name in ("api", "worker"):
            growth = results["memory"]["rss"][name]["growth_first_to_last_quarter"]
            add(
                f"memory: {name} growth first→last quarter", "< 10%", f"{growth:+.1%}", growth < 0.1
            )
    return rows


def _row(name: str, rate: str, latency: dict[str, float], errors: int, ratio: str) -> str:
    cells = [name, rate, *(str(latency[key]) for key in ("p50", "p90", "p99", "max"))]
    return "| " + " | ".join([*cells, str(errors), ratio]) + " |"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| measurement | req/s or msg/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def wrk_row(name: str, r: dict[str, Any], ratio: str) -> None:
        lat = r["latency_ms"]
        errors = r["errors"]["non_2xx"] + r["errors"]["socket"] + r["errors"]["timeout"]
        lines.append(_row(name, f"{r['requests_per_s']:,.0f}", lat, errors, ratio))

    if "ceiling" in results:
        wrk_row("(1) ceiling: bare FastAPI, 64 conn", results["ceiling"], "1.00")
    if "ingest_sqlite" in results:
        r = results["ingest_sqlite"]
        wrk_row("(2) webhook ingest, SQLite", r, f"{r['ratio_to_ceiling']:.2f}")
    if "ingest_supabase" in results:
        r = results["ingest_supabase"]
        wrk_row("(3) webhook ingest, local Supabase", r, f"{r['ratio_to_ceiling']:.2f}")
    if "e2e" in results:
        for key, label in (
            ("steady_low_rate_many_users", "(4) e2e steady, low rate"),
            ("steady_one_user", "(4) e2e steady, one user"),
            ("steady_many_users", "(4) e2e steady"),
            ("saturation_many_users", "(4) e2e saturation"),
        ):
            r = results["e2e"][key]
            lat = r["latency_ms"]
            rate = r["sustained_msgs_per_s"]
            target = f"{r['target_rate_per_s']:g}/s" if r["target_rate_per_s"] else "burst"
            name = f"{label} {target}, {r['users']} users, {r['messages']} msgs"
            lines.append(_row(name, f"{rate:,.1f}", lat, r["messages"] - r["replied"], ""))
    if "send" in results:
        s = results["send"]
        for key, label, ratio in (
            ("send_api", "(5) send API /send/text", f"{s['ratio']:.2f}"),
            ("raw_emulator", "(5) raw httpx → emulator", "1.00"),
        ):
            r = s[key]
            lat = r["latency_ms"]
            errors = r["errors"] + r["requests"] - r["ok"]
            lines.append(_row(label, f"{r['requests_per_s']:,.0f}", lat, errors, ratio))
    out = "\n".join(lines)
    for kind, r in results.get("round_trips", {}).items():
        out += (
            f"\n\n(6) store round trips per inbound text, known user and conversation ({kind}): "
            f"{r['per_inbound_message']} repository calls = {r['per_inbound_message_low_level']} "
            f"{r['low_level_unit']}\n    ingest: {', '.join(r['ingest']['sequence'])}\n"
            f"    worker: {', '.join(r['processing']['sequence'])}"
        )
    if "memory" in results:
        m = results["memory"]
        out += (
            f"\n\n(7) memory: API over {m['api_run']['deliveries']:,} deliveries, worker over "
            f"{m['worker_run']['deliveries']:,} (drained):"
        )
        for name, r in m["rss"].items():
            growth = r["growth_first_to_last_quarter"]
            out += (
                f"\n    {name}: peak {r['peak_mb']} MB, first quarter "
                f"{r['first_quarter_mean_mb']} MB → last quarter {r['last_quarter_mean_mb']} MB "
                f"({growth:+.1%})"
            )
    checks = {
        k: v["count_check"]["ok"]
        for k, v in results.items()
        if isinstance(v, dict) and "count_check" in v
    }
    if "e2e" in results:
        checks["e2e"] = results["e2e"]["count_check"]["ok"]
    out += "\n\n(8) count checks: " + ", ".join(
        f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items()
    )
    return out


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short durations (about 2 minutes)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 20; quick 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--deliveries", type=int, help="memory run size (default 100000; quick 5000)"
    )
    parser.add_argument(
        "--worker-deliveries",
        type=int,
        help="the worker's memory run, drained to the end (default 10000; quick 2000)",
    )
    parser.add_argument("--e2e-rate", type=float, default=50.0)
    parser.add_argument(
        "--e2e-seconds", type=float, help="steady e2e duration (default 10; quick 5)"
    )
    parser.add_argument("--e2e-users", type=int, default=20)
    parser.add_argument("--saturation-messages", type=int, help="default 500; quick 200")
    parser.add_argument("--send-seconds", type=float, help="default 15; quick 4")
    parser.add_argument("--send-concurrency", type=int, default=16)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset: ingest,supabase,e2e,send,roundtrips,memory",
    )
    parser.add_argument(
        "--output", type=Path, help="results file (default bench/results/<date>.json)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other measurements already in the results file (run sections apart)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        quick=quick,
        duration=args.duration or (5.0 if quick else 20.0),
        connections=args.connections,
        deliveries=args.deliveries or (5_000 if quick else 100_000),
        worker_deliveries=args.worker_deliveries or (2_000 if quick else 10_000),
        e2e_rate=args.e2e_rate,
        e2e_seconds=args.e2e_seconds or (5.0 if quick else 10.0),
        e2e_users=args.e2e_users,
        saturation_messages=args.saturation_messages or (200 if quick else 500),
        send_seconds=args.send_seconds or (4.0 if quick else 15.0),
        send_concurrency=args.send_concurrency,
        only={part.strip() for part in args.only.split(",") if part.strip()},
        output=args.output,
        merge=bool(args.merge),
    )


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM as an exception, so every `finally` stops what this run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(tempfile.mkdtemp(prefix="fizko-bench-"))
    run = Run(options, run_dir, Processes(run_dir))
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        results = measure_all(run)
    finally:
        run.processes.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    output = options.output or RESULTS / f"{dt.date.today().isoformat()}.json"
    previous: dict[str, Any] = {}
    if options.merge and output.exists():
        previous = json.loads(output.read_text())
        results = {**previous.get("results", {}), **results}
    document = {
        "date": dt.date.today().isoformat(),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        ).stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "options": {
            "quick": options.quick,
            "wrk_duration_s": options.duration,
            "connections": options.connections,
            "uvicorn": " ".join(UVICORN_ARGS),
            "e2e_rate_per_s": options.e2e_rate,
            "e2e_seconds": options.e2e_seconds,
            "e2e_users": options.e2e_users,
            "saturation_messages": options.saturation_messages,
            "send_seconds": options.send_seconds,
            "send_concurrency": options.send_concurrency,
            "memory_deliveries": options.deliveries,
            "memory_worker_deliveries": options.worker_deliveries,
        },
        "results": results,
        "targets": targets(results),
        "count_checks_failed": [
            name
            for name, section in results.items()
            if isinstance(section, dict) and not section.get("count_check", {}).get("ok", True)
        ],
        "elapsed_s": round(time.monotonic() - started + previous.get("elapsed_s", 0), 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print()
    print(table(results))
    print()
    for row in document["targets"]:
        verdict = "met" if row["met"] else "MISSED"
        print(f"  [{verdict}] {row['target']}: {row['measured']} (target {row['wanted']})")
    print(f"\nResults: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 1 if run.failures or document["count_checks_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
