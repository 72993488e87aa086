"""(8) Memory over long runs: RSS of the API taking N deliveries (worker off), then of a
`whatsapp-worker` process handling M deliveries while the API takes them, until drained."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from bench.common import rss_bytes, service_env
from bench.context import Run, log
from bench.drain import worker_argv
from bench.ingest import answering_emulator, new_tag, open_windows, request_file, wait_drained
from bench.load import run_wrk
from bench.store import seed


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
            first = sum(values[:quarter]) / quarter if values else 0
            last = sum(values[-quarter:]) / quarter if values else 0
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
    store = run.database(f"memory_{name}")
    tag = new_tag()
    prefix = f"wamid.bench{tag}"
    users = seed(store, 32, tag)
    senders = [user.sender for user in users]
    # No webhook URL: the emulator's status events for the replies are not what is measured.
    emulator = answering_emulator(run, f"memory-{name}")
    assert emulator.url is not None
    env = service_env(
        database_url=store.dsn,
        emulator_url=emulator.url,
        worker_enabled=False,
        # Pre-built deliveries carry wamids Kapso never issued, so mark-as-read is refused
        # (a logged warning per message); replies are still sent.
        log_level="ERROR",
    )
    started = []
    try:
        open_windows(emulator.url, senders)
        requests = request_file(run, f"memory-{name}", count, senders, tag)
        api = run.processes.uvicorn(f"service-memory-{name}", "app.main:create_app", env=env)
        started.append(api)
        pids = {"api": api.pid}
        if with_worker:
            worker = run.processes.start(f"worker-memory-{name}", worker_argv(), env=env)
            started.append(worker)
            pids["worker"] = worker.pid
            _wait_settled_rss(worker.pid)  # its imports and start-up are not growth
        assert api.url is not None
        log(f"memory: {count:,} deliveries; sampling RSS of {' and '.join(pids)}")
        with Sampler(pids) as sampler:
            result = run_wrk(
                f"{api.url}/api/whatsapp/webhook",
                requests,
                connections=options.connections,
                duration=3600,
                once=True,
                server_pids=pids,
            )
            drained_at = wait_drained(store, prefix, timeout=3600) if with_worker else 0.0
        requests.unlink()
        states = store.inbox_states(prefix)
        recorded = sum(states.values())
        distinct = store.count(
            "select count(distinct wamid) from public.whatsapp_inbox_events where wamid like $1",
            prefix + "%",
        )
        check: dict[str, Any] = {"states": states, "recorded": recorded, "distinct": distinct}
        if with_worker:
            replies = store.count(
                "select count(*) from public.whatsapp_outbound_messages o "
                "join public.whatsapp_inbox_events e on e.id = o.inbox_event_id "
                "where e.wamid like $1 and o.purpose = 'reply' and o.status = 'sent'",
                prefix + "%",
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
        for process in reversed(started):
            run.processes.stop(process)
        run.processes.stop(emulator)
        run.cluster.drop(store)


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
