"""scripts/local-supabase.sh: the real stack, started, stopped and deleted from a private home."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db.embedded import SYSTEM_STATE_DIR, EmbeddedPostgres
from support.supabase_stack import (
    PRIVATE_STACKS,
    SupabaseStack,
    free_port_base,
    local_supabase_stack,
    parse_env,
    run_script,
    sweep_abandoned_stacks,
)

pytestmark = pytest.mark.timeout(300)

AS_ROOT = os.geteuid() == 0


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {path: stat.S_IMODE(path.stat().st_mode) for path in paths}


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _cluster_dir(stack_dir: Path, port: int) -> Path:
    return EmbeddedPostgres(stack_dir / "postgres", port=port).cluster_dir


async def _applied_migrations(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "select version from supabase_migrations.schema_migrations order by version"
        )
    finally:
        await connection.close()
    return [row["version"] for row in rows]


def _get(stack: SupabaseStack, path: str, key: str) -> httpx.Response:
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    return httpx.get(f"{stack.url}/rest/v1/{path}", headers=headers, timeout=10)


def _wait_closed(port: int) -> None:
    deadline = time.monotonic() + 10
    while _accepts(port):
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.05)


async def test_up_status_down_reset_in_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    stack_dir = home / "stack"
    base = free_port_base()
    env = {**os.environ, "LOCAL_SUPABASE_DIR": str(stack_dir), "LOCAL_SUPABASE_PORT": str(base)}
    watched = [home, *home.parents]
    before = _modes(watched)
    cluster_dir = _cluster_dir(stack_dir, base + 3)

    try:
        up = run_script("up", env)
        assert up.returncode == 0, up.stderr
        stack = parse_env(up.stdout)
        assert stack.url == f"http://127.0.0.1:{base}"
        assert stack.database_url == f"postgresql://postgres@127.0.0.1:{base + 3}/postgres"
        status = run_script("status", env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr

        # PostgREST through the gateway, on the schema the service's migration runner applied.
        companies = _get(stack, "companies?select=id&limit=1", stack.service_role_key)
        assert companies.status_code == 200, companies.text
        assert isinstance(companies.json(), list)
        assert _get(stack, "companies", "not-a-jwt").status_code == 401
        assert await _applied_migrations(stack.database_url) != []
        if AS_ROOT:
            # PostgreSQL's own user cannot reach the private home: its data lives elsewhere.
            assert cluster_dir.is_relative_to(SYSTEM_STATE_DIR)
            assert (stack_dir / "postgres" / "cluster").resolve() == cluster_dir
        assert (cluster_dir / "data" / "PG_VERSION").is_file()
        assert stat.S_IMODE(stack_dir.stat().st_mode) == 0o700

        # `up` again: everything already runs, nothing is applied twice.
        again = run_script("up", env)
        assert again.returncode == 0, again.stderr
        assert parse_env(again.stdout).database_url == stack.database_url

        down = run_script("down", env, timeout=60)
        assert down.returncode == 0, down.stderr
        assert run_script("status", env, timeout=60).returncode != 0
        for port in range(base, base + 4):
            _wait_closed(port)
        assert not EmbeddedPostgres(stack_dir / "postgres").status().running
        assert (cluster_dir / "data" / "PG_VERSION").is_file()  # down keeps the data
    finally:
        reset = run_script("reset", env, timeout=120)
    assert reset.returncode == 0, reset.stderr
    assert not cluster_dir.exists()
    assert not (stack_dir / "postgres").exists()
    assert _modes(watched) == before
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def _new_private_stacks(known: set[Path]) -> list[Path]:
    return [path for path in PRIVATE_STACKS.iterdir() if path not in known]


def test_a_sessions_private_stack_is_deleted_with_its_cluster() -> None:
    PRIVATE_STACKS.mkdir(parents=True, exist_ok=True)
    known = set(PRIVATE_STACKS.iterdir())
    with local_supabase_stack() as stack:
        (stack_dir,) = _new_private_stacks(known)
        port = int(stack.database_url.rsplit(":", 1)[1].split("/")[0])
        cluster_dir = _cluster_dir(stack_dir, port)
        assert (cluster_dir / "data" / "PG_VERSION").is_file()
        assert _accepts(port)
    assert not stack_dir.exists()
    assert not cluster_dir.exists()
    _wait_closed(port)


def test_the_sweep_deletes_stacks_of_killed_sessions_only(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    abandoned = stacks / "abandoned"
    abandoned.mkdir(parents=True)
    # A pid that no longer exists: a child we waited for.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (abandoned / "owner.pid").write_text(str(dead.pid))
    alive = stacks / "alive"
    alive.mkdir()
    (alive / "owner.pid").write_text(str(os.getpid()))
    base = free_port_base()
    env = {**os.environ, "LOCAL_SUPABASE_DIR": str(abandoned), "LOCAL_SUPABASE_PORT": str(base)}
    cluster_dir = _cluster_dir(abandoned, base + 3)
    try:
        up = run_script("up", env)
        assert up.returncode == 0, up.stderr

        # Just made: its session may not have written owner.pid yet.
        assert sweep_abandoned_stacks(stacks) == []
        assert sweep_abandoned_stacks(stacks, min_age_seconds=0) == [abandoned]
        assert not abandoned.exists()
        assert not cluster_dir.exists()
        for port in range(base, base + 4):
            _wait_closed(port)
        assert alive.is_dir()
    finally:
        if abandoned.exists():
            run_script("reset", env, timeout=120)
