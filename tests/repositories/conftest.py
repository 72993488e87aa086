"""The contract suite runs on PostgreSQL (the session's embedded cluster, a fresh database per
test). `open_stores` opens more `Stores` on the same database, each with a pool of its own: what
another API or worker process sees."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.db.pool import Database, PoolOptions
from app.repositories.stores import Stores

StoresFactory = Callable[[], Awaitable[Stores]]


@pytest.fixture
async def open_stores(database_url: str) -> AsyncIterator[StoresFactory]:
    opened: list[Database] = []

    async def open_another() -> Stores:
        database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=4))
        opened.append(database)
        return Stores.on(database)

    yield open_another
    for database in opened:
        await database.aclose()
