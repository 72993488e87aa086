"""The real local Supabase stack (scripts/local-supabase.sh) for one pytest session.

By default each session gets a private stack (its own directory under .local/supabase-test/
and free ports), so concurrent test runs and a developer's stack never share inbox rows; at the
end it is stopped and deleted (`reset`: its embedded PostgreSQL too, and as root that cluster's
copy under /var/lib/fizko-whatsapp). With LOCAL_SUPABASE_DIR (and LOCAL_SUPABASE_PORT) set, that
stack is used: reused when already up, else started and stopped again at the end. A stack that
cannot start fails the run; nothing is skipped.

`python -m support.supabase_stack sweep` (PYTHONPATH=tests; scripts/test.sh runs it) deletes
the private stacks of sessions that were killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-supabase.sh"
PRIVATE_STACKS = ROOT / ".local" / "supabase-test"
# A session writes owner.pid right after making its directory: leave younger ones alone.
SWEEP_MIN_AGE_SECONDS = 60.0


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


def run_script(
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


def parse_env(output: str) -> SupabaseStack:
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


def free_port_base() -> int:
    for _ in range(200):
        base = 56000 + 4 * int.from_bytes(os.urandom(2), "big") % 3000
        if _ports_free(base):
            return base
    raise RuntimeError("no four consecutive free ports for a private Supabase stack")


def _delete_stack(directory: Path) -> None:
    """Stop a private stack and delete it, its embedded cluster included."""
    result = run_script("reset", {**os.environ, "LOCAL_SUPABASE_DIR": str(directory)}, timeout=120)
    if result.returncode != 0:
        # Kept, so that the next sweep tries again (a bare rmtree would orphan, as root,
        # the cluster under /var/lib/fizko-whatsapp).
        raise RuntimeError(
            f"scripts/local-supabase.sh reset failed ({result.returncode}) for {directory}:\n"
            f"{result.stderr}"
        )
    shutil.rmtree(directory, ignore_errors=True)


def sweep_abandoned_stacks(
    under: Path = PRIVATE_STACKS, *, min_age_seconds: float = SWEEP_MIN_AGE_SECONDS
) -> list[Path]:
    """Delete private stacks whose pytest process is gone (a killed run); returns them."""
    if not under.is_dir():
        return []
    swept = []
    for directory in sorted(under.iterdir()):
        if directory.is_symlink() or not directory.is_dir():
            continue
        try:
            pid = int((directory / "owner.pid").read_text())
            os.kill(pid, 0)
            continue  # its session is still running
        except (OSError, ValueError):
            pass
        with contextlib.suppress(FileNotFoundError):
            if time.time() - directory.stat().st_mtime < min_age_seconds:
                continue  # just made: its session has not written owner.pid yet
        try:
            _delete_stack(directory)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            # Another session's leftovers must not fail this one; the next sweep tries again.
            print(f"could not delete the abandoned stack {directory}: {exc}", file=sys.stderr)
            continue
        swept.append(directory)
    return swept


@contextlib.contextmanager
def local_supabase_stack() -> Iterator[SupabaseStack]:
    """Bring a stack up (or reuse the configured one) and tear down only what we started."""
    env = dict(os.environ)
    private_dir: Path | None = None
    if "LOCAL_SUPABASE_DIR" in env:
        already_up = run_script("status", env, timeout=60).returncode == 0
    else:
        sweep_abandoned_stacks()
        private_dir = PRIVATE_STACKS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        private_dir.mkdir(parents=True)
        (private_dir / "owner.pid").write_text(str(os.getpid()))
        env["LOCAL_SUPABASE_DIR"] = str(private_dir)
        already_up = False

    started = False
    try:
        if already_up:
            result = run_script("env", env)
        else:
            for _ in range(3):  # another process may grab the probed ports first
                if private_dir is not None:
                    env["LOCAL_SUPABASE_PORT"] = str(free_port_base())
                result = run_script("up", env)
                started = True
                if result.returncode == 0 or "is taken" not in result.stderr:
                    break
                # What did start (PostgreSQL, on its old port) must not stay on those ports.
                run_script("down", env, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(
                f"scripts/local-supabase.sh failed ({result.returncode}):\n{result.stderr}"
            )
        yield parse_env(result.stdout)
    finally:
        if private_dir is not None:
            _delete_stack(private_dir)
        elif started:
            down = run_script("down", env, timeout=60)
            if down.returncode != 0:
                raise RuntimeError(
                    f"scripts/local-supabase.sh down failed ({down.returncode}):\n{down.stderr}"
                )


if __name__ == "__main__":
    if sys.argv[1:] != ["sweep"]:
        sys.exit("usage: PYTHONPATH=tests python -m support.supabase_stack sweep")
    for swept in sweep_abandoned_stacks():
        print(f"removed {swept}", file=sys.stderr)
