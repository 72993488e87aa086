"""(4)(5) End to end through the Kapso emulator, and the send API against the raw client.

The emulator plays the users (`/_emulator/inbound`), delivers signed webhooks to the service,
and accepts its replies; latency is measured on the emulator's clock alone (bench/e2e.py).
Kapso's status webhooks (sent at once, delivered after 1 s, read after 3 s) for every reply
are part of the load, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    JWT_SECRET,
    KAPSO_API_KEY,
    PHONE_NUMBER_ID,
    ROOT,
    UVICORN_ARGS,
    Process,
    client_limits,
    cpu_meter,
    cpu_shares,
    free_port,
    service_env,
)
from bench.context import Options, Run, log
from bench.drain import worker_argv
from bench.e2e import drive, warm_up
from bench.ingest import new_tag
from bench.payloads import Sender
from bench.profile import finish_record, start_record, summarise
from bench.store import StoreRef, seed


@dataclass
class Flow:
    service: Process
    emulator: Process
    worker: Process | None
    postmaster: int | None
    run: Run
    emulator_port: int
    emulator_env: dict[str, str]

    def start_emulator(self) -> None:
        """(Re)start the emulator on its port, with an empty state."""
        self.emulator = self.run.processes.start(
            f"emulator-{self.emulator_port}",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.emulator_server:create_app",
                "--factory",
                "--port",
                str(self.emulator_port),
                *UVICORN_ARGS,
            ],
            env=self.emulator_env,
            url=f"http://127.0.0.1:{self.emulator_port}",
            ready_path="/health",
        )

    def restart_emulator(self, store: StoreRef) -> None:
        """A fresh emulator, warmed by one known user's message and reply: its lookups of a
        user's conversation scan every conversation it holds, so thousands of new senders
        would make each message cost it more and more, which Kapso does not."""
        self.run.processes.stop(self.emulator)
        self.start_emulator()
        (user,) = seed(store, 1, new_tag())
        warm(self, [user.sender], store)

    @property
    def emulator_url(self) -> str:
        assert self.emulator.url is not None
        return self.emulator.url

    def processes(self) -> dict[str, int]:
        pids = {"service": self.service.pid, "emulator": self.emulator.pid}
        if self.worker is not None:
            pids["worker"] = self.worker.pid
        return pids

    def trees(self) -> dict[str, int]:
        return {"postgres": self.postmaster} if self.postmaster else {}


@contextlib.contextmanager
def flow(run: Run, store: StoreRef, name: str, *, separate_worker: bool = False) -> Iterator[Flow]:
    """The emulator and the service, wired both ways; the worker in the API process (the
    default) or, with `separate_worker`, in one `whatsapp-worker` process of its own."""
    # The service's port is not known before it starts: start it first, pointing at the
    # emulator's port chosen now.
    emulator_port = free_port()
    env = service_env(
        database_url=store.dsn,
        emulator_url=f"http://127.0.0.1:{emulator_port}",
        worker_enabled=not separate_worker,
    )
    service = run.processes.uvicorn(f"service-{name}", "app.main:create_app", env=env)
    worker = None
    if separate_worker:
        worker = run.processes.start(f"worker-{name}", worker_argv(), env=env)
    emulator_env = service_env(database_url=None, emulator_url=None, worker_enabled=False)
    emulator_env["BENCH_EMULATOR_WEBHOOK_URL"] = f"{service.url}/api/whatsapp/webhook"
    postmaster = run.cluster.postmaster_pid if store.kind == "embedded" else None
    running = Flow(service, service, worker, postmaster, run, emulator_port, emulator_env)
    try:
        running.start_emulator()
        yield running
    finally:
        if running.emulator is not service:
            run.processes.stop(running.emulator)
        if worker is not None:
            run.processes.stop(worker)
        run.processes.stop(service)


def settle(store: StoreRef, emulator_url: str, timeout: float = 600) -> float:
    """Wait until the emulator has nothing left to deliver and the inbox nothing to do."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending = httpx.get(f"{emulator_url}/_emulator/health", timeout=30).json()["pending_tasks"]
        if pending == 0 and set(store.inbox_states()) <= {"done", "dead"}:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def phase(
    store: StoreRef,
    running: Flow,
    label: str,
    senders: list[Sender],
    rate: float,
    count: int,
) -> dict[str, Any]:
    log(f"e2e: {label}")
    with cpu_meter({**running.processes(), "bench_driver": os.getpid()}, running.trees()) as cpu:
        result = asyncio.run(drive(running.emulator_url, senders, rate=rate, count=count))
    result["cpu_share"] = cpu_shares(cpu)
    result["settled_after_s"] = round(settle(store, running.emulator_url), 1)
    return result


def flow_count_check(
    run: Run, store: StoreRef, results: list[dict[str, Any]], label: str
) -> dict[str, Any]:
    """Inbox all done; user messages stored = replies recorded = replies Kapso accepted; the
    emulator got exactly one reply per message."""
    states = store.inbox_states()
    inbound = store.count("select count(*) from public.messages where role = 'user'")
    replies = store.count(
        "select count(*) from public.whatsapp_outbound_messages where purpose = 'reply'"
    )
    sent = store.count(
        "select count(*) from public.whatsapp_outbound_messages "
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
        run.fail(f"{label} count check failed: {check}")
    return check


def warm(running: Flow, senders: list[Sender], store: StoreRef) -> None:
    """Each user writes once and is answered: conversation stored, identity cached."""

    async def go() -> None:
        async with httpx.AsyncClient(
            base_url=running.emulator_url, timeout=60, limits=client_limits()
        ) as client:
            await warm_up(client, senders)

    asyncio.run(go())
    settle(store, running.emulator_url)


def measure_e2e(run: Run) -> dict[str, Any]:
    """(4) 50 msg/s from known users on known conversations: (a) the worker in the API process,
    (b) the API with WORKER_ENABLED=false and one `whatsapp-worker` process."""
    options = run.options
    count = int(options.e2e_rate * options.e2e_seconds)
    results: dict[str, Any] = {}
    for key, separate in (("in_process_worker", False), ("separate_worker", True)):
        store = run.database(f"e2e_{key}")
        users = seed(store, options.e2e_users, new_tag())
        many = [user.sender for user in users]
        with flow(run, store, f"e2e-{key}", separate_worker=separate) as running:
            warm(running, many, store)
            runs: dict[str, Any] = {
                "steady_many_users": phase(
                    store,
                    running,
                    f"{key}: {options.e2e_rate:g} msg/s, {len(many)} users",
                    many,
                    options.e2e_rate,
                    count,
                )
            }
            if not separate:
                runs["steady_one_user"] = phase(
                    store,
                    running,
                    f"{key}: {options.e2e_rate:g} msg/s, one user",
                    many[:1],
                    options.e2e_rate,
                    count,
                )
            runs["count_check"] = flow_count_check(
                run,
                store,
                [r for name, r in runs.items() if name != "count_check"],
                f"e2e ({key})",
            )
        runs["worker"] = (
            "one whatsapp-worker process; the API with WORKER_ENABLED=false"
            if separate
            else "in the API process (WORKER_ENABLED=true, the default)"
        )
        results[key] = runs
        run.cluster.drop(store)
    results["count_check"] = {
        "ok": all(results[key]["count_check"]["ok"] for key in results),
    }
    return results


def measure_capacity(run: Run) -> dict[str, Any]:
    """(5) The default deployment (one API process with its worker, embedded PostgreSQL) taking
    NEW senders — known Fizko users writing for the first time, so each message opens a new
    conversation (identity looked up, conversation created) — at fixed rates.

    The fixed rate (`capacity_rate`, 100/s) always runs; the other steps run in ascending order
    until one misses the target, and when even the lowest misses, lower rates are tried until
    one holds. Then the service is profiled with py-spy at the fixed rate."""
    options = run.options
    target = options.capacity_target_ms
    store = run.database("capacity")
    steps: dict[float, dict[str, Any]] = {}
    with flow(run, store, "capacity") as running:

        def step(rate: float, label: str = "capacity") -> dict[str, Any]:
            count = int(rate * options.capacity_seconds)
            senders = [user.sender for user in seed(store, count, new_tag())]
            running.restart_emulator(store)
            return phase(
                store, running, f"{label}: {count} new senders at {rate:g}/s", senders, rate, count
            )

        missed = False
        for rate in sorted({*options.capacity_steps, options.capacity_rate}):
            if missed and rate != options.capacity_rate:
                continue
            steps[rate] = step(rate)
            missed = missed or not step_ok(steps[rate], target)
        lower = min(steps)
        while not any(step_ok(result, target) for result in steps.values()) and lower > 10:
            lower = max(10.0, lower - 10 if lower <= 50 else lower / 2)
            steps[lower] = step(lower, "capacity, below the steps")
        count = int(options.capacity_rate * options.profile_seconds)
        senders = [user.sender for user in seed(store, count, new_tag())]
        profile_path = run.run_dir / "capacity-profile.speedscope.json"
        log(f"capacity: py-spy on the service, {count} new senders at {options.capacity_rate:g}/s")
        profiled_seconds = max(1.0, options.profile_seconds - 1)
        running.restart_emulator(store)
        spy = start_record(running.service.pid, profile_path, profiled_seconds)
        try:
            profiled = phase(
                store,
                running,
                f"capacity, profiled: {count} new senders at {options.capacity_rate:g}/s",
                senders,
                options.capacity_rate,
                count,
            )
        finally:
            finish_record(spy)
        profile = summarise(profile_path, seconds=profiled_seconds)
        ordered = [steps[rate] for rate in sorted(steps)]
        check = flow_count_check(run, store, [*ordered, profiled], "capacity")
    sustained = [rate for rate, result in steps.items() if step_ok(result, target)]
    run.cluster.drop(store)
    return {
        "deployment": "one API process with its in-process worker (the default), embedded "
        "PostgreSQL; every message from a known user writing for the first time",
        "target_p99_ms": target,
        "steps": ordered,
        "highest_rate_within_target": max(sustained) if sustained else 0.0,
        "at_fixed_rate": steps[options.capacity_rate],
        "profiled_run": profiled,
        "profile": profile,
        "count_check": check,
    }


def step_ok(result: dict[str, Any], target_ms: float) -> bool:
    """Every message answered, offered on time, p99 within the target."""
    return bool(
        result["offer_errors"] == 0
        and result["replied"] == result["messages"]
        and result["latency_ms"]["p99"] <= target_ms
        and result["offered_rate_per_s"] >= 0.95 * (result["target_rate_per_s"] or 0)
    )


# --- the send API ---------------------------------------------------------------------------


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

    store = run.database("send")
    (user,) = seed(store, 1, new_tag())
    with flow(run, store, "send") as running:
        assert running.service.url is not None
        warm(running, [user.sender], store)  # the user writes first: window open
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
        with cpu_meter(running.processes(), running.trees()) as cpu:
            api = loadgen(
                f"{running.service.url}/api/whatsapp/send/text",
                {"conversation_selector": {"phone_number": user.sender.phone}, "content": text},
                {"Authorization": f"Bearer {token}"},
                run.options,
            )
        api["cpu_share"] = cpu_shares(cpu)
        settle(store, running.emulator_url)
        log(f"send API: raw httpx calls to the emulator for {run.options.send_seconds:g} s")
        with cpu_meter(running.processes(), running.trees()) as cpu:
            raw = loadgen(
                f"{running.emulator_url}/meta/whatsapp/v24.0/{PHONE_NUMBER_ID}/messages",
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
        raw["cpu_share"] = cpu_shares(cpu)
        settle(store, running.emulator_url)
        stored = store.count(
            "select count(*) from public.whatsapp_outbound_messages where purpose = 'api' "
            "and status in ('sent', 'delivered', 'read')"
        )
    run.cluster.drop(store)
    ratio = api["requests_per_s"] / raw["requests_per_s"] if raw["requests_per_s"] else 0.0
    check = {"api_200": api["ok"], "recorded_sends": stored, "ok": stored == api["ok"]}
    if not check["ok"]:
        run.fail(f"send API count check failed: {check}")
    return {"send_api": api, "raw_emulator": raw, "ratio": round(ratio, 3), "count_check": check}
