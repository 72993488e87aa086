"""A database that fails is a store error, never "not found" (the original told registered
users to register when the database hiccupped)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import asyncpg
import pytest

from app.db.pool import Database, PoolOptions
from app.repositories.errors import StoreConstraintError, StoreError, StoreUnavailableError
from app.repositories.stores import Stores


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_database_is_unavailable() -> None:
    with pytest.raises(StoreUnavailableError):
        await Database.connect(
            f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
            PoolOptions(timeout_seconds=2),
        )


async def test_a_closed_pool_is_unavailable_not_not_found(database_url: str) -> None:
    database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=2))
    stores = Stores.on(database)
    await database.ping()
    await database.aclose()
    with pytest.raises(StoreUnavailableError):
        await stores.directory.find_profile_by_phone("+56912345678")
    with pytest.raises(StoreUnavailableError):
        await stores.directory.get_active_company(uuid.uuid4())
    with pytest.raises(StoreUnavailableError):
        await stores.inbox.claim_inbox_events(owner="w", limit=1, lease_seconds=1, max_attempts=1)
    with pytest.raises(StoreUnavailableError):
        await database.ping()


async def test_a_slow_statement_is_unavailable(database_url: str) -> None:
    database = await Database.connect(
        database_url, PoolOptions(min_size=1, max_size=2, timeout_seconds=0.3)
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await database.execute("select pg_sleep(5)")
        # The pool recovers.
        await database.ping()
    finally:
        await database.aclose()


async def test_a_connection_killed_mid_statement_is_unavailable_and_the_pool_recovers(
    database_url: str,
) -> None:
    database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=1))
    try:
        slow = asyncio.create_task(database.execute("select pg_sleep(5)"))
        admin = await asyncpg.connect(database_url)
        try:
            for _ in range(100):
                killed = await admin.fetchval(
                    """select count(pg_terminate_backend(pid)) from pg_stat_activity
                        where query = 'select pg_sleep(5)' and pid <> pg_backend_pid()"""
                )
                if killed:
                    break
                await asyncio.sleep(0.02)
        finally:
            await admin.close()
        with pytest.raises(StoreUnavailableError):
            await slow
        await database.ping()
    finally:
        await database.aclose()


async def test_bad_data_is_a_constraint_error_and_other_failures_a_store_error(
    stores: Stores,
) -> None:
    with pytest.raises(StoreConstraintError):
        await stores.database.execute("select 1 / 0")
    with pytest.raises(StoreError) as raised:
        await stores.database.execute("select * from no_such_table")
    assert not isinstance(raised.value, StoreConstraintError | StoreUnavailableError)
