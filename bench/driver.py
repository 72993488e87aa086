"""(9) The driver: asyncpg vs psycopg 3 (async, pooled) on the ingest path's insert.

The statement is the inbox's (`insert ... select from unnest(...) on conflict do nothing
returning id`, its triggers included) on the run's embedded PostgreSQL; 64 concurrent tasks
over a pool of 10 connections (the service's default), batches of 1 and 16 events, each
variant for a fixed time on uvloop (the service's loop). asyncpg runs twice: through the
data layer's `Database` as the service does, and on a bare pool whose release skips the
reset query asyncpg sends by default (one round trip per release). psycopg runs in autocommit
(one statement, one round trip, as asyncpg outside a transaction), JSON dumped with orjson
like the service's codec, prepared statements after its default threshold. The database runs
with synchronous_commit off, so the WAL flush (the disk, the same for both) is not measured.
Reported: inserts and events per second, latency, and the client's CPU per statement (this
process's, so the driver's cost is not mixed with the server's).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import orjson
import uvloop

from app.db.pool import Database, PoolOptions
from app.integrations.kapso.api.webhooks import parse_webhook
from app.services.whatsapp.webhook_ingest import to_inbox_events
from bench.common import percentile
from bench.context import Run
from bench.payloads import EVENT, Sender, message_received

SQL_ASYNCPG = """insert into public.whatsapp_inbox_events
     (id, idempotency_key, event, wamid, conversation_key, payload)
   select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
   on conflict do nothing
   returning id"""
SQL_PSYCOPG = SQL_ASYNCPG.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s")
SQL_PSYCOPG = SQL_PSYCOPG.replace("$4", "%s").replace("$5", "%s").replace("$6", "%s")

TASKS = 64
POOL_SIZE = 10

Insert = Callable[[list[Any]], Awaitable[int]]


def _payload() -> dict[str, Any]:
    """The payload the service records for a v2 text message (as the webhook route parses it)."""
    body = orjson.dumps(message_received(Sender("+56998000001", "conv-driver"), "wamid.driver"))
    (event,) = to_inbox_events(
        parse_webhook(body, event=EVENT, batch_header=None, payload_version="v2"), body, {}
    )
    return dict(event.payload)


def _columns(batch: int, payload: dict[str, Any]) -> list[Any]:
    keys = [str(uuid.uuid4()) for _ in range(batch)]
    return [
        [uuid.uuid4() for _ in range(batch)],
        keys,
        [EVENT] * batch,
        [f"wamid.{key}" for key in keys],
        [f"conv-{i % 64}" for i in range(batch)],
        [payload] * batch,
    ]


async def _drive(insert: Insert, batch: int, seconds: float) -> dict[str, Any]:
    payload = _payload()
    latencies: list[float] = []
    stop_at = 0.0

    async def task() -> None:
        while time.monotonic() < stop_at:
            columns = _columns(batch, payload)
            started = time.perf_counter()
            inserted = await insert(columns)
            latencies.append((time.perf_counter() - started) * 1000)
            if inserted != batch:
                raise RuntimeError(f"inserted {inserted} of {batch}")

    stop_at = time.monotonic() + 1.0  # warm-up: connections, prepared statements
    await asyncio.gather(*(task() for _ in range(TASKS)))
    latencies.clear()
    cpu_before = time.process_time()
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(task() for _ in range(TASKS)))
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    latencies.sort()
    statements = len(latencies)
    return {
        "batch": batch,
        "statements_per_s": round(statements / wall, 1),
        "events_per_s": round(statements * batch / wall, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
        },
        "client_cpu_us_per_statement": round(cpu / statements * 1e6, 1) if statements else None,
        "client_cpu_share": round(cpu / wall, 2),
    }


async def _asyncpg_database(dsn: str, batch: int, seconds: float) -> dict[str, Any]:
    database = await Database.connect(dsn, PoolOptions(min_size=POOL_SIZE, max_size=POOL_SIZE))
    try:

        async def insert(columns: list[Any]) -> int:
            return len(await database.fetch(SQL_ASYNCPG, *columns))

        return await _drive(insert, batch, seconds)
    finally:
        await database.aclose()


async def _keep_session(_connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """A pool reset that sends nothing (the service leaves no session state behind)."""


async def _asyncpg_bare(dsn: str, batch: int, seconds: float) -> dict[str, Any]:
    async def init(connection: asyncpg.Connection[asyncpg.Record]) -> None:
        await connection.set_type_codec(
            "jsonb",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )

    pool = await asyncpg.create_pool(
        dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, init=init, reset=_keep_session
    )
    try:

        async def insert(columns: list[Any]) -> int:
            async with pool.acquire() as connection:
                return len(await connection.fetch(SQL_ASYNCPG, *columns))

        return await _drive(insert, batch, seconds)
    finally:
        await pool.close()


async def _psycopg(dsn: str, batch: int, seconds: float) -> dict[str, Any]:
    from psycopg import AsyncConnection
    from psycopg.types.json import Jsonb
    from psycopg_pool import AsyncConnectionPool

    def dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

    async def configure(connection: AsyncConnection[Any]) -> None:
        await connection.set_autocommit(True)

    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, configure=configure
    )
    await pool.open(wait=True)
    try:

        async def insert(columns: list[Any]) -> int:
            columns[5] = [Jsonb(value, dumps=dumps) for value in columns[5]]
            async with pool.connection() as connection:
                cursor = await connection.execute(SQL_PSYCOPG, columns)
                return len(await cursor.fetchall())

        return await _drive(insert, batch, seconds)
    finally:
        await pool.close()


def measure_drivers(run: Run) -> dict[str, Any]:
    store = run.database("driver")
    # The drivers, not the disk: with synchronous commit every insert waits for a WAL flush,
    # which costs both drivers the same.
    run.cluster.set(store, "synchronous_commit", "off")
    seconds = 3.0 if run.options.quick else 10.0
    variants: dict[str, Callable[[str, int, float], Coroutine[Any, Any, dict[str, Any]]]] = {
        "asyncpg (the service's Database)": _asyncpg_database,
        "asyncpg, pool without the reset query": _asyncpg_bare,
        "psycopg 3 (AsyncConnectionPool, autocommit)": _psycopg,
    }
    results: dict[str, Any] = {}
    try:
        for size in (1, 16):
            for name, variant in variants.items():
                results.setdefault(name, {})[f"batch_{size}"] = uvloop.run(
                    variant(store.dsn, size, seconds)
                )
    finally:
        run.cluster.drop(store)
    base = "asyncpg (the service's Database)"
    ratios = {}
    for batch in ("batch_1", "batch_16"):
        reference = results[base][batch]["statements_per_s"]
        for name in variants:
            if name != base and reference:
                ratios[f"{name} / asyncpg, {batch}"] = round(
                    results[name][batch]["statements_per_s"] / reference, 2
                )
    return {
        "tasks": TASKS,
        "pool_size": POOL_SIZE,
        "seconds_each": seconds,
        "variants": results,
        "ratios": ratios,
        "ratios_are": "statements/s relative to asyncpg through the service's Database, same batch",
    }
