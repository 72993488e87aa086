"""PostgreSQL for the tests: one embedded cluster per pytest session, a fresh database per test.

The cluster is the same embedded PostgreSQL the service starts by default (app.db.embedded), in
a private state directory under .local/postgres-test/ (fsync off), removed at the end. The
schema is migrated once into a template database; each test gets its own copy of it
(`create database ... template`, a few tens of milliseconds), so tests never see each other's
inbox events, as the per-test SQLite files of old did.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.db.embedded import EmbeddedPostgres
from app.db.migrations import apply_migrations
from app.db.pool import Database, PoolOptions

ROOT = Path(__file__).resolve().parents[2]
TEST_CLUSTERS = ROOT / ".local" / "postgres-test"
TEMPLATE = "fizko_template"


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(frozen=True)
class PostgresCluster:
    """The session's PostgreSQL: its server DSN and the migrated template."""

    dsn: str
    state_dir: Path

    @contextlib.asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[str]:
        """A new database with the whole schema; dropped afterwards. Yields its DSN."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        admin = await asyncpg.connect(self.dsn)
        try:
            await admin.execute(f'create database "{name}" template {TEMPLATE}')
        finally:
            await admin.close()
        try:
            yield with_database(self.dsn, name)
        finally:
            admin = await asyncpg.connect(self.dsn)
            try:
                await admin.execute(f'drop database if exists "{name}" with (force)')
            finally:
                await admin.close()


async def _build_template(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"drop database if exists {TEMPLATE}")
        await admin.execute(f"create database {TEMPLATE}")
    finally:
        await admin.close()
    database = await Database.connect(with_database(dsn, TEMPLATE), PoolOptions(min_size=1))
    try:
        await apply_migrations(database)
    finally:
        await database.aclose()


@contextlib.contextmanager
def session_cluster() -> Iterator[PostgresCluster]:
    """Start a private cluster and its template; stop and delete it all at the end."""
    import asyncio

    state_dir = TEST_CLUSTERS / uuid.uuid4().hex[:12]
    embedded = EmbeddedPostgres(state_dir, durable=False)
    dsn = embedded.acquire()
    try:
        asyncio.run(_build_template(dsn))
        yield PostgresCluster(dsn=dsn, state_dir=state_dir)
    finally:
        embedded.release()
        embedded.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)
