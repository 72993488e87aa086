"""Shared plumbing: the processes a benchmark starts, their CPU and memory, the settings."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BACKEND = ROOT / "backend"

# What the service and the emulator agree on in every run (local, throw-away values).
KAPSO_API_KEY = "bench-kapso-key"
WEBHOOK_SECRET = "bench-webhook-secret"  # noqa: S105 - a local benchmark's throw-away key
JWT_SECRET = "bench-jwt-secret-that-is-long-enough-0123456789"  # noqa: S105
PHONE_NUMBER_ID = "1029384756"
WABA_ID = "102290129340398"

# One uvicorn invocation for every server we measure (the ceiling, the service, the emulator):
# one process, uvicorn's default (auto) loop and HTTP implementations — uvloop and httptools,
# installed by uvicorn[standard] — and no access log (a line per request measures the terminal).
# Idle keep-alive connections are kept 75 s (nginx's default; load balancers hold 60 s or
# more), not uvicorn's 5 s: at 5 s the server closes an idle connection just as httpx (whose
# own expiry is also 5 s) sends on it, the request fails and is retried after a back-off —
# hundreds of milliseconds that the bench would have measured as the service's latency.
UVICORN_ARGS = (
    "--timeout-keep-alive",
    "75",
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "auto",
    "--http",
    "auto",
    "--log-level",
    "warning",
    "--no-access-log",
)

# Idle keep-alive connections are dropped before uvicorn's own 5 s timeout closes them: a
# request sent on a connection the server is closing at that moment fails (httpx.ReadError).
KEEPALIVE_EXPIRY = 2.0


def client_limits(connections: int = 32) -> httpx.Limits:
    """httpx limits for the bench's clients of our uvicorn servers."""
    return httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )


CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of its children that ended (reaped) and of those still running.

    For PostgreSQL's postmaster: every backend is its child, and short-lived ones count too.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 (1-based) in proc(5).
    total = sum(int(value) for value in fields[11:15]) / CLK_TCK
    for child in children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(child)
    return total


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (from /proc)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE_SIZE


def service_env(
    *,
    database_url: str | None,
    emulator_url: str | None,
    worker_enabled: bool,
    log_level: str = "WARNING",
    **extra: str,
) -> dict[str, str]:
    """The environment of a service process; nothing inherited from ours reaches Settings.

    `database_url` None: the servers that need no database (the ceiling, the emulator).
    """
    from app.core.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(
        ENVIRONMENT="development",
        LOG_LEVEL=log_level,
        KAPSO_API_KEY=KAPSO_API_KEY,
        KAPSO_WEBHOOK_SECRET=WEBHOOK_SECRET,
        # Without an emulator nothing may call Kapso; a closed port makes that loud.
        KAPSO_BASE_URL=emulator_url or "http://127.0.0.1:9",
        KAPSO_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        KAPSO_WABA_ID=WABA_ID,
        SUPABASE_JWT_SECRET=JWT_SECRET,
        WORKER_ENABLED="true" if worker_enabled else "false",
        # The send API's per-user limit is a product rule, not a cost: out of the way.
        SEND_RATE_LIMIT_PER_MINUTE="1000000000",
        PYTHONPATH=os.pathsep.join([str(BACKEND), str(ROOT)]),
        PYTHONUNBUFFERED="1",
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Process:
    """A child process we started (its own session, so nothing leaks when it is stopped)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Processes:
    """Every process a run started; `stop_all` ends them (and only them)."""

    run_dir: Path
    started: list[Process] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        ready_path: str | None = None,
        timeout: float = 60.0,
    ) -> Process:
        log_path = self.run_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - our own argv
                argv,
                cwd=self.run_dir,
                env=dict(env if env is not None else os.environ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log_path, url)
        self.started.append(process)
        if url is not None and ready_path is not None:
            wait_ready(process, url + ready_path, timeout)
        return process

    def uvicorn(
        self, name: str, target: str, *, env: Mapping[str, str], timeout: float = 60.0
    ) -> Process:
        """A server `target` (a `module:factory`) under the one uvicorn configuration."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--factory",
            "--port",
            str(port),
            *UVICORN_ARGS,
        ]
        return self.start(
            name,
            argv,
            env=env,
            url=f"http://127.0.0.1:{port}",
            ready_path="/health",
            timeout=timeout,
        )

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()


def wait_ready(process: Process, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready at {url}:\n{process.log_tail()}")


@contextlib.contextmanager
def cpu_meter(
    processes: Mapping[str, int], trees: Mapping[str, int] | None = None
) -> Iterator[dict[str, float]]:
    """CPU seconds each named process (and each process tree: PostgreSQL) spent inside the
    block, and the wall clock ("wall")."""
    trees = trees or {}
    result: dict[str, float] = {}
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    before.update({name: process_tree_cpu_seconds(pid) for name, pid in trees.items()})
    started = time.monotonic()
    yield result
    result["wall"] = time.monotonic() - started
    for name, pid in processes.items():
        with contextlib.suppress(OSError):
            result[name] = cpu_seconds(pid) - before[name]
    for name, pid in trees.items():
        with contextlib.suppress(OSError):
            result[name] = process_tree_cpu_seconds(pid) - before[name]


def cpu_shares(meter: Mapping[str, float]) -> dict[str, float]:
    """Cores used by each process while measured (CPU seconds / wall seconds)."""
    wall = meter.get("wall") or 1e-9
    return {name: round(value / wall, 2) for name, value in meter.items() if name != "wall"}


def machine_idle(seconds: float = 3.0) -> dict[str, float]:
    """How idle the machine's CPUs were over `seconds` (from /proc/stat): other work running
    beside a benchmark shows here, and so does a hypervisor taking CPU time (steal)."""

    def sample() -> list[int]:
        return [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]

    before = sample()
    time.sleep(seconds)
    after = sample()
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta) or 1
    # user nice system idle iowait irq softirq steal ...
    return {
        "idle": round((delta[3] + delta[4]) / total, 3),
        "steal": round(delta[7] / total, 3) if len(delta) > 7 else 0.0,
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]
