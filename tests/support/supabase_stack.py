"""The real local Supabase stack (scripts/local-supabase.sh) for one pytest session.

By default each session gets a private stack (its own data directory under
.local/supabase-test/ and free ports), so concurrent test runs and a developer's stack never
share inbox rows; it is stopped and deleted at the end. With LOCAL_SUPABASE_DIR (and
LOCAL_SUPABASE_PORT) set, that stack is used: reused when already up, else started and stopped
again at the end. A stack that cannot start fails the run; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-supabase.sh"
PRIVATE_STACKS = ROOT / ".local" / "supabase-test"


@dataclass(frozen=True)
class SupabaseStack:
    url: str
    anon_key: str
    service_role_key: str
    jwt_secret: str
    database_url: str

    def user_token(self, user_id: uuid.UUID, *, ttl_seconds: int = 3600) -> str:
        """An access token as Supabase Auth issues it for a signed-in user."""
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": "authenticated",
            "aud": "authenticated",
            "iat": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")


def _run(
    command: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _parse_env(output: str) -> SupabaseStack:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return SupabaseStack(
        url=values["SUPABASE_URL"],
        anon_key=values["SUPABASE_ANON_KEY"],
        service_role_key=values["SUPABASE_SERVICE_ROLE_KEY"],
        jwt_secret=values["SUPABASE_JWT_SECRET"],
        database_url=values["DATABASE_URL"],
    )


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
        base = 56000 + 4 * int.from_bytes(os.urandom(2), "big") % 3000
        if _ports_free(base):
            return base
    raise RuntimeError("no four consecutive free ports for a private Supabase stack")


def _sweep_abandoned_stacks() -> None:
    """Stop and delete private stacks whose pytest process is gone (a killed run)."""
    if not PRIVATE_STACKS.is_dir():
        return
    for directory in PRIVATE_STACKS.iterdir():
        owner = directory / "owner.pid"
        try:
            pid = int(owner.read_text())
            os.kill(pid, 0)
            continue  # its session is still running
        except (OSError, ValueError):
            pass
        _run("down", {**os.environ, "LOCAL_SUPABASE_DIR": str(directory)}, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def local_supabase_stack() -> Iterator[SupabaseStack]:
    """Bring a stack up (or reuse the configured one) and tear down only what we started."""
    env = dict(os.environ)
    private_dir: Path | None = None
    if "LOCAL_SUPABASE_DIR" in env:
        already_up = _run("status", env, timeout=60).returncode == 0
    else:
        _sweep_abandoned_stacks()
        private_dir = PRIVATE_STACKS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        private_dir.mkdir(parents=True)
        (private_dir / "owner.pid").write_text(str(os.getpid()))
        env["LOCAL_SUPABASE_DIR"] = str(private_dir)
        already_up = False

    started = False
    try:
        if already_up:
            result = _run("env", env)
        else:
            for _ in range(3):  # another process may grab the probed ports first
                if private_dir is not None:
                    env["LOCAL_SUPABASE_PORT"] = str(_free_port_base())
                result = _run("up", env)
                started = True
                if result.returncode == 0 or "is taken" not in result.stderr:
                    break
        if result.returncode != 0:
            raise RuntimeError(
                f"scripts/local-supabase.sh failed ({result.returncode}):\n{result.stderr}"
            )
        yield _parse_env(result.stdout)
    finally:
        if started:
            _run("down", env, timeout=60)
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
