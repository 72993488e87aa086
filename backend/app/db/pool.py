"""`Database`: the process's asyncpg pool, its transactions, and PostgreSQL's errors as ours.

Every repository runs its SQL through one `Database`. A step that writes several things opens
`transaction()` and passes the connection to each store method (`tx=`), so the writes commit
together; without `tx` a method runs on a pooled connection on its own (one statement is
atomic by itself).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import orjson

from app.repositories.errors import (
    StoreConflictError,
    StoreConstraintError,
    StoreError,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

# A connection inside a transaction (or any pooled connection): what store methods accept as tx.
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
Record: TypeAlias = asyncpg.Record

# SQLSTATE classes that say "try again later", not "your data is wrong".
_RETRYABLE_CLASSES = ("08", "40", "53", "55", "57", "58")


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How to connect: sizes, timeouts, and whether a transaction-mode pooler is in between."""

    min_size: int = 2
    max_size: int = 10
    # Under Kapso's 10 s webhook deadline, so a stuck database answers 503 before Kapso gives up.
    timeout_seconds: float = 5.0
    # Supavisor/PgBouncer in transaction mode hand each transaction to any server connection:
    # named prepared statements do not survive there, and LISTEN is not possible.
    transaction_pooler: bool = False


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(connection: Connection) -> None:
    # jsonb in and out as Python objects, with orjson (several times faster than json on
    # webhook payloads).
    for name in ("jsonb", "json"):
        await connection.set_type_codec(
            name, encoder=_json_dumps, decoder=orjson.loads, schema="pg_catalog"
        )


async def _reset_connection(connection: Connection) -> None:
    """What a connection needs before it goes back to the pool: no open transaction (one
    interrupted mid-way). asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` on every release — a round trip and server work per store call —
    for session state this service never sets on pooled connections (its advisory lock is
    transaction-scoped; LISTEN has a connection of its own)."""
    if connection.is_in_transaction():
        await connection.execute("rollback")


class Database:
    """An asyncpg pool with transactions and store errors; built once per process."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        dsn: str,
        options: PoolOptions | None = None,
    ) -> None:
        self._pool = pool
        self.dsn = dsn
        self.options = options or PoolOptions()

    @classmethod
    async def connect(cls, dsn: str, options: PoolOptions | None = None) -> Database:
        """Open the pool (its first connections are made here: a bad URL fails at start)."""
        options = options or PoolOptions()
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(options.min_size, options.max_size),
                max_size=options.max_size,
                command_timeout=options.timeout_seconds,
                timeout=options.timeout_seconds,
                init=_init_connection,
                reset=_reset_connection,
                # 0 turns asyncpg's named statement cache off (transaction-mode poolers).
                statement_cache_size=0 if options.transaction_pooler else 256,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {err}") from err
        return cls(pool, dsn, options)

    async def aclose(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def connection(self, tx: Connection | None = None) -> AsyncIterator[Connection]:
        """`tx` when given (the caller's transaction), else a pooled connection."""
        if tx is not None:
            yield tx
            return
        with translate_errors():
            async with self._pool.acquire() as connection:
                yield connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises.

        A statement that failed inside the block aborts the transaction even if the caller
        caught its error: the commit then rolls back, and that is raised, never silent."""
        with translate_errors():
            async with self._pool.acquire() as connection:
                await connection.execute("begin")
                try:
                    yield connection
                except BaseException:
                    if not connection.is_closed():
                        await connection.execute("rollback")
                    raise
                outcome = await connection.execute("commit")
                if outcome != "COMMIT":
                    raise StoreError("the transaction failed and was rolled back")

    async def fetch(self, sql: str, *args: Any, tx: Connection | None = None) -> list[Record]:
        with translate_errors():
            async with self.connection(tx) as connection:
                return await connection.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any, tx: Connection | None = None) -> Record | None:
        with translate_errors():
            async with self.connection(tx) as connection:
                return await connection.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any, tx: Connection | None = None) -> str:
        with translate_errors():
            async with self.connection(tx) as connection:
                return await connection.execute(sql, *args)

    async def executemany(
        self, sql: str, args: Sequence[Sequence[Any]], *, tx: Connection | None = None
    ) -> None:
        with translate_errors():
            async with self.connection(tx) as connection:
                await connection.executemany(sql, args)

    async def ping(self) -> None:
        """Check the database answers; raises `StoreUnavailableError` when it does not."""
        await self.fetchrow("select 1")


@contextlib.contextmanager
def translate_errors() -> Any:
    """PostgreSQL's and the driver's failures as store errors (one mapping, here)."""
    try:
        yield
    except StoreError:
        raise
    except asyncpg.PostgresError as err:
        raise store_error(err) from err
    except (asyncpg.InterfaceError, OSError, TimeoutError) as err:
        # Connection lost, pool closed, server unreachable, command or acquire timeout.
        raise StoreUnavailableError(f"postgres: {type(err).__name__}: {err}") from err


def store_error(err: asyncpg.PostgresError) -> StoreError:
    state = str(getattr(err, "sqlstate", "") or "")
    message = f"postgres {state}: {err}"
    if state.startswith(("22", "23")):
        # Class 22 (data exception) and 23 (integrity constraint violation).
        return StoreConstraintError(message)
    if state in ("40001", "40P01"):
        return StoreConflictError(message)
    if state.startswith(_RETRYABLE_CLASSES):
        return StoreUnavailableError(message)
    return StoreError(message)
