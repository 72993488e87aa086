"""The benchmark's PostgreSQL: the run's embedded cluster, seeding known users, counting rows.

A run starts ONE embedded PostgreSQL (`app.db.embedded.EmbeddedPostgres`, durable: fsync and
synchronous commit on, as the service's default) in its own state directory, migrates a
template database once, and gives each measurement a fresh copy of it (`create database ...
template`). The service processes reach it through DATABASE_URL = the cluster's Unix-socket
DSN, which is exactly what the service connects to when it starts the embedded PostgreSQL
itself; so measurements never see each other's rows, and the bench's own seeding and count
checks use the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.db.embedded import EmbeddedPostgres
from app.db.migrations import apply_migrations
from app.db.pool import Database, PoolOptions
from app.dev_seed import DirectorySeeder
from bench.payloads import Sender

TEMPLATE = "bench_template"
T = TypeVar("T")


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(frozen=True)
class StoreRef:
    """One measurement's database, by DSN; read-only SQL helpers for the count checks."""

    dsn: str
    kind: str = "embedded"  # "embedded" | "supabase"

    @property
    def name(self) -> str:
        """The database's name."""
        return urlsplit(self.dsn).path.lstrip("/")

    async def open(self, max_size: int = 10) -> Database:
        return await Database.connect(self.dsn, PoolOptions(min_size=1, max_size=max_size))

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return await connection.fetch(sql, *args)
        finally:
            await connection.close()

    def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Rows of a read-only query, straight from the database (not the service)."""
        return asyncio.run(self.fetch(sql, *args))

    async def inbox_states_async(self, wamid_prefix: str | None = None) -> dict[str, int]:
        """How many inbox events (whose wamid starts with `wamid_prefix`) are in each state."""
        if wamid_prefix is None:
            rows = await self.fetch(
                "select state, count(*) from public.whatsapp_inbox_events group by state"
            )
        else:
            rows = await self.fetch(
                "select state, count(*) from public.whatsapp_inbox_events "
                "where wamid like $1 group by state",
                wamid_prefix + "%",
            )
        return {str(row[0]): int(row[1]) for row in rows}

    def inbox_states(self, wamid_prefix: str | None = None) -> dict[str, int]:
        return asyncio.run(self.inbox_states_async(wamid_prefix))

    def count(self, sql: str, *args: object) -> int:
        rows = self.query(sql, *args)
        return int(rows[0][0]) if rows else 0


@dataclass
class BenchCluster:
    """The run's embedded PostgreSQL and its migrated template."""

    embedded: EmbeddedPostgres
    dsn: str  # the server's `postgres` database (administration only)

    @property
    def postmaster_pid(self) -> int | None:
        return self.embedded.status().pid

    def database(self, name: str) -> StoreRef:
        """A fresh database with the whole schema (a copy of the template)."""

        async def create() -> None:
            admin = await asyncpg.connect(self.dsn)
            try:
                await admin.execute(f'drop database if exists "{name}" with (force)')
                await admin.execute(f'create database "{name}" template {TEMPLATE}')
            finally:
                await admin.close()

        asyncio.run(create())
        return StoreRef(with_database(self.dsn, name))

    def set(self, store: StoreRef, setting: str, value: str) -> None:
        """`alter database ... set`: for the sessions opened on `store` from now on."""

        async def alter() -> None:
            admin = await asyncpg.connect(self.dsn)
            try:
                await admin.execute(f'alter database "{store.name}" set {setting} = {value}')
            finally:
                await admin.close()

        asyncio.run(alter())

    def drop(self, store: StoreRef) -> None:
        """Drop a measurement's database once it is done (keeps the disk and WAL small)."""
        name = store.name

        async def drop() -> None:
            admin = await asyncpg.connect(self.dsn)
            try:
                await admin.execute(f'drop database if exists "{name}" with (force)')
                await admin.execute("checkpoint")
            finally:
                await admin.close()

        asyncio.run(drop())

    @property
    def log_file(self) -> Path:
        return self.embedded.log_file


@contextlib.contextmanager
def bench_cluster(state_dir: Path) -> Iterator[BenchCluster]:
    """Start the run's cluster (durable, like the service's default); destroy it at the end."""
    embedded = EmbeddedPostgres(state_dir)
    try:
        dsn = embedded.acquire()

        async def template() -> None:
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(f"drop database if exists {TEMPLATE}")
                await admin.execute(f"create database {TEMPLATE}")
            finally:
                await admin.close()
            database = await Database.connect(
                with_database(dsn, TEMPLATE), PoolOptions(min_size=1, max_size=1)
            )
            try:
                await apply_migrations(database)
            finally:
                await database.aclose()

        asyncio.run(template())
        yield BenchCluster(embedded, dsn)
    finally:
        embedded.release()
        embedded.destroy()


@dataclass(frozen=True)
class KnownUser:
    sender: Sender
    user_id: uuid.UUID
    company_id: uuid.UUID


async def bounded(factories: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run the coroutines the factories make, at most `concurrency` at a time, in order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await factory()

    return list(await asyncio.gather(*(one(factory) for factory in factories)))


def user_phone(tag: str, index: int) -> str:
    """A Chilean mobile number unique to (tag, index) for up to 100,000 users per tag."""
    prefix = 100 + int(hashlib.sha256(tag.encode()).hexdigest(), 16) % 900
    return f"+569{prefix:03d}{index:05d}"


async def seed_users(
    database: Database, count: int, *, tag: str, concurrency: int = 16
) -> list[KnownUser]:
    """`count` Fizko users (DirectorySeeder, as the web app writes them), each with an active
    company; each sender gets its own Kapso conversation id for pre-built deliveries."""
    seeder = DirectorySeeder(database)

    def user(index: int) -> Callable[[], Awaitable[KnownUser]]:
        async def create() -> KnownUser:
            phone = user_phone(tag, index)
            name = f"Usuaria {index}"
            profile = await seeder.create_profile(phone=phone, full_name=name)
            company = await seeder.create_company(business_name=f"Bench {tag} {index} SpA")
            await seeder.create_session(user_id=profile.id, company_id=company.id)
            return KnownUser(
                Sender(phone, f"bench-{tag}-{index}", name=name), profile.id, company.id
            )

        return create

    return await bounded([user(index) for index in range(count)], concurrency)


def seed(store: StoreRef, count: int, tag: str) -> list[KnownUser]:
    """`seed_users` from synchronous code."""

    async def run() -> list[KnownUser]:
        database = await store.open(max_size=16)
        try:
            return await seed_users(database, count, tag=tag)
        finally:
            await database.aclose()

    return asyncio.run(run())
