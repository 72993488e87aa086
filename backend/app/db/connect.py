"""Open the process's database from the settings: DATABASE_URL, or the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from app.core.settings import Settings
from app.db.embedded import EmbeddedPostgres
from app.db.migrations import apply_migrations, require_migrations
from app.db.pool import Database, PoolOptions

logger = logging.getLogger(__name__)


def pool_options(settings: Settings) -> PoolOptions:
    return PoolOptions(
        min_size=settings.database_pool_min_size,
        max_size=settings.database_pool_max_size,
        timeout_seconds=settings.store_timeout_seconds,
        transaction_pooler=settings.uses_transaction_pooler,
    )


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """The pool, on a schema with every migration applied (or checked, in production)."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.database_url is not None:
            dsn = settings.database_url.get_secret_value()
            where = "DATABASE_URL"
        else:
            embedded = EmbeddedPostgres(settings.embedded_postgres_dir)
            dsn = await asyncio.to_thread(embedded.acquire)
            # Stopped when the last process of this checkout using it lets go.
            stack.push_async_callback(asyncio.to_thread, embedded.release)
            where = f"embedded PostgreSQL in {settings.embedded_postgres_dir}"
        database = await Database.connect(dsn, pool_options(settings))
        stack.push_async_callback(database.aclose)
        if settings.database_url is None or settings.should_migrate_on_start:
            applied = await apply_migrations(database)
            if applied:
                logger.info("Applied %d migration(s) on %s", len(applied), where)
        else:
            await require_migrations(database)
        logger.info("Database: %s", where)
        yield database
