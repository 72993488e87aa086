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


@contextlib.contextmanager
def private_supabase() -> Iterator[dict[str, str]]:
    """Start a stack; yields SUPABASE_URL, the keys, SUPABASE_JWT_SECRET and DATABASE_URL."""
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
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        yield values
    finally:
        _run("down", env, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
