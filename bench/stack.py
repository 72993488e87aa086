"""A private local Supabase stack for one benchmark run (scripts/local-supabase.sh).

Its own data directory under .local/bench-supabase/ and its own free ports, so it never
touches a developer's stack or the test suite's; stopped and deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import ROOT

SCRIPT = ROOT / "scripts" / "local-supabase.sh"
STACKS = ROOT / ".local" / "bench-supabase"


def _ports_free(base: int) -> bool:
    for port in range(base, base + 4):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port_base() -> int:
    for _ in range(200):
        base = 47000 + 4 * (int.from_bytes(os.urandom(2), "big") % 2000)
        if _ports_free(base):
            return base
    raise RuntimeError("no four consecutive free ports for the benchmark's Supabase stack")


def _run(
    command: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script
        [str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_env(output: str) -> dict[str, str]:
    """`NAME=value` (or `export NAME='value'`) lines, as the script's `env` prints them."""
    values = {}
    for line in output.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.isidentifier():
            values[name] = value.strip().strip("'\"")
    return values


@contextlib.contextmanager
def private_supabase() -> Iterator[dict[str, str]]:
    """Start a stack; yields what its `env` prints (DATABASE_URL among them)."""
    directory = STACKS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    env = {**os.environ, "LOCAL_SUPABASE_DIR": str(directory)}
    try:
        result = None
        for _ in range(3):  # another process may take the probed ports first
            env["LOCAL_SUPABASE_PORT"] = str(_free_port_base())
            result = _run("up", env)
            if result.returncode == 0 or "is taken" not in result.stderr:
                break
        assert result is not None
        if result.returncode != 0:
            raise RuntimeError(f"scripts/local-supabase.sh up failed:\n{result.stderr}")
        values = parse_env(result.stdout)
        pid = _postmaster_pid(directory)
        if pid is not None:
            values["BENCH_POSTMASTER_PID"] = str(pid)
        yield values
    finally:
        # reset: down, and delete the stack's database (as root it lives outside `directory`).
        if _run("reset", env, timeout=120).returncode != 0:
            _run("down", env, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _postmaster_pid(directory: Path) -> int | None:
    """The stack's PostgreSQL server, for its CPU share (the script keeps the embedded
    PostgreSQL's state in <dir>/postgres); None when it cannot be told."""
    from app.db.embedded import EmbeddedPostgres, EmbeddedPostgresError

    state = directory / "postgres"
    if not state.is_dir():
        return None
    try:
        return EmbeddedPostgres(state).status().pid
    except (EmbeddedPostgresError, OSError):
        return None
