"""(7) Store round trips per inbound text from a known user on a known conversation — counted
twice, from both ends:

- PostgreSQL's side: the measurement's database logs every protocol step
  (`log_min_duration_statement = 0`: each parse, bind, execute and simple query, with its
  backend pid), and the run's server log is read between the steps. Transactions are
  BEGIN…COMMIT blocks plus statements run outside one (each its own transaction).
- The client's side: the service runs in this process on a `CountingDatabase` (the data
  layer's `Database`, counting each statement and transaction and naming the code that issued
  it).

Kapso is the emulator. The worker is driven step by step as it runs in production: the claim
that hands out a message also marks the previous event done.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.container import build_container, worker_policy
from app.core.settings import Settings
from app.db.pool import Connection, Database, PoolOptions, Record
from app.repositories.models import InboxEvent
from app.repositories.stores import Stores
from app.services.whatsapp.inbox_worker import InboxWorker
from bench.common import (
    JWT_SECRET,
    KAPSO_API_KEY,
    PHONE_NUMBER_ID,
    WABA_ID,
    WEBHOOK_SECRET,
    client_limits,
)
from bench.store import StoreRef, seed_users

# The query asyncpg's pool sends when a connection is released (Connection.reset()).
POOL_RESET = "SELECT pg_advisory_unlock_all();"


# --- the client's side -----------------------------------------------------------------------


@dataclass
class Statement:
    where: str  # the function that issued it (outside the data layer's pool module)
    in_transaction: bool
    sql: str


@dataclass
class Tally:
    statements: list[Statement] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)  # explicit: where each was opened
    acquisitions: int = 0  # pooled connections taken (each release costs asyncpg a reset)
    sequence: list[str] = field(default_factory=list)  # transactions, in the order they began


def _issuer() -> str:
    """The innermost caller outside the data layer's pool module and contextlib."""
    frame = sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        if not file.endswith(("db/pool.py", "contextlib.py", "bench/roundtrips.py")):
            return frame.f_code.co_qualname
        back = frame.f_back
        if back is None:
            break
        frame = back
    return "?"


class CountingDatabase(Database):
    """The data layer's `Database`, counting what it sends and who asked."""

    tally: Tally
    _in_transaction: set[int]

    def start_counting(self) -> None:
        self.tally = Tally()
        self._in_transaction = set()

    def take(self) -> Tally:
        tally, self.tally = self.tally, Tally()
        return tally

    def _note(self, sql: str, tx: Connection | None) -> None:
        inside = tx is not None and id(tx) in self._in_transaction
        where = _issuer()
        self.tally.statements.append(Statement(where, inside, " ".join(sql.split())[:80]))
        if not inside:
            self.tally.sequence.append(f"statement: {where}")

    @contextlib.asynccontextmanager
    async def connection(self, tx: Connection | None = None) -> AsyncIterator[Connection]:
        if tx is None:
            self.tally.acquisitions += 1
        async with super().connection(tx) as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        self.tally.acquisitions += 1
        where = _issuer()
        self.tally.transactions.append(where)
        self.tally.sequence.append(f"transaction: {where}")
        async with super().transaction() as connection:
            self._in_transaction.add(id(connection))
            try:
                yield connection
            finally:
                self._in_transaction.discard(id(connection))

    async def fetch(self, sql: str, *args: Any, tx: Connection | None = None) -> list[Record]:
        self._note(sql, tx)
        return await super().fetch(sql, *args, tx=tx)

    async def fetchrow(self, sql: str, *args: Any, tx: Connection | None = None) -> Record | None:
        self._note(sql, tx)
        return await super().fetchrow(sql, *args, tx=tx)

    async def execute(self, sql: str, *args: Any, tx: Connection | None = None) -> str:
        self._note(sql, tx)
        return await super().execute(sql, *args, tx=tx)

    async def executemany(
        self, sql: str, args: Sequence[Sequence[Any]], *, tx: Connection | None = None
    ) -> None:
        self._note(sql, tx)
        await super().executemany(sql, args, tx=tx)


def client_summary(tally: Tally) -> dict[str, Any]:
    # A statement outside every transaction() block is a transaction of its own.
    standalone = [s for s in tally.statements if not s.in_transaction]
    transactions = len(tally.transactions) + len(standalone)
    return {
        "transactions": transactions,
        "statements": len(tally.statements),
        "pool_acquisitions": tally.acquisitions,
        "sequence": tally.sequence,
        "statements_by_issuer": dict(Counter(s.where for s in tally.statements)),
    }


# --- PostgreSQL's side -----------------------------------------------------------------------

_LINE = re.compile(
    r"^\S+ \S+ \S+ \[(?P<pid>\d+)\] LOG:  duration: (?P<ms>[\d.]+) ms  "
    r"(?P<kind>statement|parse|bind|execute)(?: [^:]*)?: (?P<sql>.*)$"
)


@dataclass
class ServerLog:
    """Reads the run's server log from where it was last read."""

    path: Path
    offset: int = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def take(self) -> list[tuple[int, str, float, str]]:
        """(pid, kind, ms, first line of SQL) of each logged protocol step since last time."""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        steps = []
        for line in data.decode(errors="replace").splitlines():
            match = _LINE.match(line)
            if match:
                steps.append(
                    (int(match["pid"]), match["kind"], float(match["ms"]), match["sql"].strip())
                )
        return steps


def server_summary(steps: list[tuple[int, str, float, str]]) -> dict[str, Any]:
    """Transactions, statements and round trips from PostgreSQL's log of one step."""
    in_block: dict[int, bool] = {}
    transactions = statements = resets = parses = executes = 0
    server_ms = 0.0
    for pid, kind, ms, sql in steps:
        server_ms += ms
        head = sql.split(";", 1)[0].strip().upper()
        if kind == "parse":
            parses += 1  # a statement prepared for the first time on this connection
            continue
        if kind == "bind":
            continue  # sent with its execute, in one round trip
        executes += 1
        if kind == "statement" and sql.startswith(POOL_RESET):
            resets += 1
            continue
        if head in {"BEGIN", "START TRANSACTION"}:
            in_block[pid] = True
            continue
        if head in {"COMMIT", "ROLLBACK", "END"}:
            in_block[pid] = False
            transactions += 1
            continue
        statements += 1
        if not in_block.get(pid, False):
            transactions += 1
    return {
        "transactions": transactions,
        "statements": statements,
        "pool_resets": resets,
        # Each execute (bind+execute, or a simple query) is one round trip; a first-time parse
        # is one more.
        "round_trips": executes + parses,
        "first_time_parses": parses,
        "server_ms": round(server_ms, 2),
    }


# --- the run ---------------------------------------------------------------------------------


def bench_settings(emulator_url: str, database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        kapso_api_key=SecretStr(KAPSO_API_KEY),
        kapso_webhook_secret=SecretStr(WEBHOOK_SECRET),
        kapso_base_url=emulator_url,
        kapso_phone_number_id=PHONE_NUMBER_ID,
        kapso_waba_id=WABA_ID,
        supabase_jwt_secret=SecretStr(JWT_SECRET),
        database_url=SecretStr(database_url),
        worker_enabled=False,
        log_level="WARNING",
    )


async def _deliveries(control: httpx.AsyncClient, after_seq: int) -> list[dict[str, Any]]:
    response = await control.get("/_emulator/deliveries")
    response.raise_for_status()
    found: list[dict[str, Any]] = [d for d in response.json()["data"] if d["seq"] > after_seq]
    return found


@dataclass
class Step:
    client: Tally
    server: list[tuple[int, str, float, str]]

    def summary(self) -> dict[str, Any]:
        return {"client": client_summary(self.client), "server": server_summary(self.server)}


async def count_round_trips(store: StoreRef, emulator_url: str, server_log: Path) -> dict[str, Any]:
    """Count one inbound text's store work (ingest + processing) and its reply's status events.

    `store`'s sessions must log every statement (log_min_duration_statement = 0)."""
    database = await CountingDatabase.connect(store.dsn, PoolOptions(min_size=2, max_size=10))
    assert isinstance(database, CountingDatabase)
    database.start_counting()
    log = ServerLog(server_log)
    stores = Stores.on(database)
    (user,) = await seed_users(database, 1, tag=uuid.uuid4().hex[:6])
    settings = bench_settings(emulator_url, store.dsn)
    try:
        async with (
            build_container(settings, stores=stores) as container,
            httpx.AsyncClient(base_url=emulator_url, timeout=30, limits=client_limits()) as control,
        ):
            finished = 0
            progress = asyncio.Event()

            async def process(event: InboxEvent) -> None:
                nonlocal finished
                try:
                    await container.processor.process(event)
                finally:
                    finished += 1
                    progress.set()

            # A worker of our own, driven step by step, on the container's inbox and processor.
            worker = InboxWorker(container.stores.inbox, process, worker_policy(settings))

            async def claim_and_process() -> int:
                """One claim (carrying the completions of what ran before), and its events
                processed; their completions wait for the next claim, as in production."""
                nonlocal finished
                finished = 0
                claimed = await worker.claim_and_start()
                while finished < claimed:
                    progress.clear()
                    await progress.wait()
                # The worker notes each event finished right after `process` returns.
                await asyncio.sleep(0)
                return claimed

            def step() -> Step:
                return Step(database.take(), log.take())

            seen = 0

            async def one_message(text: str) -> dict[str, Any]:
                nonlocal seen
                response = await control.post(
                    "/_emulator/inbound", json={"phone": user.sender.phone, "text": text}
                )
                response.raise_for_status()
                (delivery,) = [
                    d
                    for d in await _deliveries(control, seen)
                    if d["event"] == "whatsapp.message.received"
                ]
                seen = delivery["seq"]
                step()
                await container.ingest.ingest(delivery["body"].encode(), delivery["headers"])
                ingest = step()
                claimed = await claim_and_process()
                processing = step()
                # Kapso reports the reply as sent (at once), delivered (1 s) and read (3 s).
                await asyncio.sleep(3.5)
                statuses: list[Step] = []
                for status in await _deliveries(control, seen):
                    seen = max(seen, status["seq"])
                    if status["event"] == "whatsapp.message.received":
                        continue
                    step()
                    await container.ingest.ingest(status["body"].encode(), status["headers"])
                    # One claim, as a busy worker makes it: it carries the previous event's
                    # completion, and this one's waits for the next claim.
                    if not await claim_and_process():
                        raise RuntimeError(f"status event {status['event']} was not claimed")
                    statuses.append(step())
                return {
                    "claimed": claimed,
                    "ingest": ingest,
                    "processing": processing,
                    "statuses": statuses,
                }

            # A new conversation (identity resolved and cached, connections and prepared
            # statements warmed), then the measured message on the known conversation.
            await one_message("Hola")
            await one_message("¿Y el PPM?")
            known = await one_message("¿Cuánto IVA debo pagar?")
            await worker.flush_finished()
            kapso_calls = await control.get("/_emulator/outbox", params={"to": user.sender.phone})
            kapso_kinds = Counter(entry["kind"] for entry in kapso_calls.json()["data"])
    finally:
        await database.aclose()
    ingest = known["ingest"].summary()
    processing = known["processing"].summary()
    statuses = [s.summary() for s in known["statuses"]]

    def total(key: str, side: str) -> int:
        return int(ingest[side][key]) + int(processing[side][key])

    return {
        "ingest": ingest,
        "processing": processing,
        "per_inbound_message": {
            "transactions": total("transactions", "server"),
            "statements": total("statements", "server"),
            "round_trips": total("round_trips", "server"),
            "pool_resets": total("pool_resets", "server"),
            "server_ms": round(
                ingest["server"]["server_ms"] + processing["server"]["server_ms"], 2
            ),
            "transactions_client_side": total("transactions", "client"),
            "statements_client_side": total("statements", "client"),
        },
        "status_events_for_the_reply": statuses,
        "kapso_calls_for_three_messages": dict(kapso_kinds),
        "measured_message_was_claimed": known["claimed"] == 1,
    }
