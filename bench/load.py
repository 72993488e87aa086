"""Driving wrk with pre-built deliveries, and reading what it (and the servers) did."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, cpu_seconds

LUA = ROOT / "bench" / "wrk" / "deliveries.lua"


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (./scripts/bench.sh installs it)")
    return path


def run_wrk(
    url: str,
    request_file: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    server_pids: dict[str, int] | None = None,
    timeout_seconds: int = 10,
    once: bool = False,
    on_tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """POST the file's deliveries to `url` at `connections` for `duration` seconds.

    With `once`, stop as soon as every delivery was sent (`duration` is then a cap).
    `on_tick` is called about every 0.25 s while wrk runs (memory sampling).
    Returns wrk's counts and latencies (ms), requests/s, and the CPU seconds used by wrk
    itself and by each server in `server_pids` meanwhile (to show who was the bottleneck).
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out_path = Path(handle.name)
    done_marker = out_path.with_suffix(".done")
    env = {
        **os.environ,
        "BENCH_REQUESTS": str(request_file),
        "BENCH_THREADS": str(threads),
        "BENCH_WRK_OUT": str(out_path),
        "BENCH_ONCE": "1" if once else "0",
        "BENCH_DONE_FILE": str(done_marker),
    }
    argv = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_seconds}s",
        "-s",
        str(LUA),
        url,
    ]
    servers_before = {name: cpu_seconds(pid) for name, pid in (server_pids or {}).items()}
    popen = subprocess.Popen(  # noqa: S603 - our own argv
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        status, usage = _wait_wrk(popen, threads, done_marker, once=once, on_tick=on_tick)
    finally:
        if popen.poll() is None:  # interrupted ourselves: wrk must not outlive the run
            popen.kill()
            popen.wait()
    popen.returncode = os.waitstatus_to_exitcode(status)
    for index in range(threads):
        Path(f"{done_marker}.{index}").unlink(missing_ok=True)
    output = popen.stdout.read().decode(errors="replace") if popen.stdout else ""
    servers = {
        name: round(cpu_seconds(pid) - servers_before[name], 2)
        for name, pid in (server_pids or {}).items()
    }
    if popen.returncode != 0 or not out_path.exists() or out_path.stat().st_size == 0:
        raise RuntimeError(f"wrk failed ({popen.returncode}):\n{output}")
    raw = json.loads(out_path.read_text())
    out_path.unlink()
    seconds = raw["duration_us"] / 1e6
    latency = {name: round(value / 1000, 2) for name, value in raw["latency_us"].items()}
    errors = raw["errors"]
    return {
        "connections": connections,
        "duration_s": round(seconds, 2),
        "requests": raw["completed"],
        "issued": raw["issued"],
        "prebuilt_requests": raw["available"],
        "reused_prebuilt": raw["wrapped"],
        "requests_per_s": round(raw["completed"] / seconds, 1),
        "latency_ms": latency,
        "errors": {
            "non_2xx": errors["status"],
            "socket": errors["connect"] + errors["read"] + errors["write"],
            "timeout": errors["timeout"],
        },
        "cpu_seconds": {
            "wrk": round(usage.ru_utime + usage.ru_stime, 2),
            **servers,
        },
    }


def _wait_wrk(
    popen: subprocess.Popen[bytes],
    threads: int,
    done_marker: Path,
    *,
    once: bool,
    on_tick: Callable[[], None] | None,
) -> tuple[int, Any]:
    """Wait for wrk (ticking `on_tick`); with `once`, stop it when every thread has sent all."""
    interrupted = False
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid != 0:
            break
        if on_tick is not None:
            on_tick()
        markers = [Path(f"{done_marker}.{index}") for index in range(threads)]
        if once and not interrupted and all(marker.exists() for marker in markers):
            # Every thread has sent its share: let the last answers arrive, then stop wrk.
            time.sleep(0.5)
            popen.send_signal(signal.SIGINT)
            interrupted = True
        time.sleep(0.25)
    return status, usage
