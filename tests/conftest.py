"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from app.db.pool import Database, PoolOptions
from app.dev_seed import DirectorySeeder
from app.repositories.stores import Stores
from support.database import PostgresCluster, session_cluster
from support.supabase_stack import SupabaseStack, local_supabase_stack


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's embedded PostgreSQL (the engine the service runs on by default)."""
    with session_cluster() as cluster:
        yield cluster


@pytest.fixture
async def database_url(postgres: PostgresCluster) -> AsyncIterator[str]:
    """A fresh database with the whole schema, for this test only."""
    async with postgres.fresh_database() as dsn:
        yield dsn


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=10))
    yield database
    await database.aclose()


@pytest.fixture
def stores(database: Database) -> Stores:
    return Stores.on(database)


@pytest.fixture
def seeder(database: Database) -> DirectorySeeder:
    return DirectorySeeder(database)


@pytest.fixture
def tag() -> str:
    """A unique prefix for this test's keys."""
    return uuid.uuid4().hex


@pytest.fixture(scope="session")
def supabase_stack() -> Iterator[SupabaseStack]:
    """The real local Supabase (PostgreSQL + PostgREST + gateway), up once per session.

    Fails the session when the stack cannot start: Supabase tests are never skipped.
    """
    with local_supabase_stack() as stack:
        yield stack
