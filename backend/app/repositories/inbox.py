"""`InboxStore`: the durable webhook inbox — record, claim with leases, settle, replay.

Events wait in queues (one per conversation, see `whatsapp_inbox_queues` in the baseline
migration): a claim hands out the oldest unfinished event of each due queue, so a conversation
is processed in arrival order, one event at a time, while others run in parallel; the claim's
cost follows what it hands out, not the backlog. Inserts notify `whatsapp_inbox`, so idle
workers in every process wake at once (`InboxNotifications`), with polling as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from uuid import UUID

import asyncpg

from app.db.pool import Connection, Database
from app.repositories.errors import StoreConflictError
from app.repositories.group_commit import GroupCommit
from app.repositories.models import (
    Conversation,
    InboxEvent,
    InboxRecordResult,
    InboxState,
    NewInboxEvent,
)
from app.repositories.rows import parse, parse_all, parse_optional

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "whatsapp_inbox"
# Times an inbox write aborted by a deadlock is run again before the delivery gets a 503.
_DEADLOCK_RETRIES = 3

# The conversation is looked up per claimed event (LATERAL: one index probe each); a plain join
# on a set-returning function is planned for 1000 rows and may scan every conversation.
_CLAIM = """
    select e.*, c.conversation
      from public.whatsapp_inbox_claim($1, $2, $3, $4) e
      left join lateral (
        select to_jsonb(x) as conversation from public.conversations x
         where x.metadata ->> 'channel' = 'whatsapp'
           and x.metadata ->> 'kapso_conversation_id' = e.conversation_key
         limit 1
      ) c on true
     order by e.seq
"""

_COMPLETE = """
    update public.whatsapp_inbox_events
       set state = 'done', lease_owner = null, lease_expires_at = null,
           completed_at = clock_timestamp(), updated_at = clock_timestamp()
     where id = any($1::uuid[]) and state = 'processing' and lease_owner = $2
    returning *
"""


class InboxStore:
    """The webhook inbox: concurrent deliveries share one insert (group commit)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        # One inbox write in flight per process: deliveries arriving meanwhile go together
        # into the next one (one statement and one commit for many webhooks).
        self._writes = GroupCommit(self._record_batch)

    async def record_inbox_events(self, events: Sequence[NewInboxEvent]) -> list[InboxRecordResult]:
        """Record events; duplicates (same idempotency key, or same wamid and event) are not
        recorded again. One result per input, in order."""
        if not events:
            return []
        return await self._writes.submit(events)

    async def _record_batch(
        self, batch: Sequence[Sequence[NewInboxEvent]]
    ) -> list[list[InboxRecordResult]]:
        events = [event for group in batch for event in group]
        ids = [uuid.uuid4() for _ in events]
        # One statement, atomic by itself: no transaction around it (one round trip). Rows go in
        # arrival order (it numbers them: `seq`); two processes writing overlapping batches in
        # different orders can wait on each other in a cycle, and PostgreSQL aborts one: it runs
        # again.
        order = range(len(events))
        for attempt in range(_DEADLOCK_RETRIES + 1):
            try:
                inserted = await self._db.fetch(
                    """insert into public.whatsapp_inbox_events
                         (id, idempotency_key, event, wamid, conversation_key, payload)
                       select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                                            $5::text[], $6::jsonb[])
                       on conflict do nothing
                       returning id""",
                    [ids[i] for i in order],
                    [events[i].idempotency_key for i in order],
                    [events[i].event for i in order],
                    [events[i].wamid or None for i in order],
                    [events[i].conversation_key or None for i in order],
                    [events[i].payload for i in order],
                )
                break
            except StoreConflictError:
                if attempt == _DEADLOCK_RETRIES:
                    raise
                logger.info("Inbox write met another one (deadlock); writing again")
        fresh = {row["id"] for row in inserted}
        found: dict[int, UUID] = {}
        if len(fresh) < len(events):
            # Duplicates, of stored events or of each other: the rows they met (committed by
            # now: the insert waited for them).
            missing = [i for i, new_id in enumerate(ids) if new_id not in fresh]
            rows = await self._db.fetch(
                # Two index lookups per event (an OR in a join would scan the table).
                """select t.n, coalesce(
                          (select e.id from public.whatsapp_inbox_events e
                            where e.idempotency_key = t.key),
                          (select e.id from public.whatsapp_inbox_events e
                            where e.wamid = t.wamid and e.event = t.event)) as id
                     from unnest($1::int[], $2::text[], $3::text[], $4::text[])
                          as t(n, key, wamid, event)""",
                missing,
                [events[i].idempotency_key for i in missing],
                [events[i].wamid or None for i in missing],
                [events[i].event for i in missing],
            )
            found = {int(row["n"]): row["id"] for row in rows if row["id"] is not None}
        results: list[list[InboxRecordResult]] = []
        position = 0
        for group in batch:
            recorded = []
            for event in group:
                new_id = ids[position]
                is_new = new_id in fresh
                event_id = new_id if is_new else found.get(position, new_id)
                recorded.append(
                    InboxRecordResult(
                        event_id=event_id, idempotency_key=event.idempotency_key, is_new=is_new
                    )
                )
                position += 1
            results.append(recorded)
        return results

    async def claim_inbox_events(
        self,
        *,
        owner: str,
        limit: int,
        lease_seconds: float,
        max_attempts: int,
        complete: Sequence[UUID] = (),
    ) -> list[InboxEvent]:
        """Lease up to `limit` due events to `owner`, oldest first, counting an attempt each;
        first mark `complete` (events `owner` finished) done, in the same transaction.

        Due: the oldest unfinished event of its conversation key, pending with its next attempt
        reached or processing with an expired lease, and no other event of its key in flight.
        An expired lease on the last allowed attempt makes the event dead instead. Each event
        comes with the stored WhatsApp conversation whose Kapso id is its conversation key.
        """
        if not complete:
            rows = await self._db.fetch(_CLAIM, owner, limit, lease_seconds, max_attempts)
        else:
            async with self._db.transaction() as tx:
                await self._db.execute(_COMPLETE, list(complete), owner, tx=tx)
                rows = await self._db.fetch(
                    _CLAIM, owner, limit, lease_seconds, max_attempts, tx=tx
                )
        events = []
        for row in rows:
            data = dict(row)
            conversation = data.pop("conversation")
            event = parse(InboxEvent, data)
            if conversation is not None:
                event = event.model_copy(update={"conversation": parse(Conversation, conversation)})
            events.append(event)
        return events

    async def complete_inbox_event(
        self, event_id: UUID, *, owner: str, tx: Connection | None = None
    ) -> InboxEvent | None:
        """Mark done; None when `owner` no longer holds the lease."""
        row = await self._db.fetchrow(_COMPLETE, [event_id], owner, tx=tx)
        return parse_optional(InboxEvent, row)

    async def extend_inbox_lease(
        self, event_id: UUID, *, owner: str, lease_seconds: float
    ) -> InboxEvent | None:
        """Extend the lease; None when `owner` no longer holds it."""
        row = await self._db.fetchrow(
            """update public.whatsapp_inbox_events
                  set lease_expires_at = clock_timestamp() + make_interval(secs => $3),
                      updated_at = clock_timestamp()
                where id = $1 and state = 'processing' and lease_owner = $2
            returning *""",
            event_id,
            owner,
            lease_seconds,
        )
        return parse_optional(InboxEvent, row)

    async def fail_inbox_event(
        self,
        event_id: UUID,
        *,
        owner: str,
        error: str,
        retry_delay_seconds: float,
        max_attempts: int,
        permanent: bool = False,
    ) -> InboxEvent | None:
        """Back to pending after `retry_delay_seconds`, or dead once attempts reached
        `max_attempts` (or when `permanent`). None when `owner` no longer holds the lease."""
        row = await self._db.fetchrow(
            """update public.whatsapp_inbox_events
                  set state = case when $3 or attempts >= $4 then 'dead' else 'pending' end,
                      next_attempt_at = case when $3 or attempts >= $4 then next_attempt_at
                                        else clock_timestamp() + make_interval(secs => $5) end,
                      lease_owner = null, lease_expires_at = null,
                      last_error = left($6, 4000), updated_at = clock_timestamp()
                where id = $1 and state = 'processing' and lease_owner = $2
            returning *""",
            event_id,
            owner,
            permanent,
            max_attempts,
            max(retry_delay_seconds, 0.0),
            error,
        )
        return parse_optional(InboxEvent, row)

    async def requeue_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        """Replay a dead event (pending, due now, attempts reset); None if it is not dead."""
        row = await self._db.fetchrow(
            """update public.whatsapp_inbox_events
                  set state = 'pending', attempts = 0, next_attempt_at = clock_timestamp(),
                      completed_at = null, updated_at = clock_timestamp()
                where id = $1 and state = 'dead' returning *""",
            event_id,
        )
        return parse_optional(InboxEvent, row)

    async def get_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        row = await self._db.fetchrow(
            "select * from public.whatsapp_inbox_events where id = $1", event_id
        )
        return parse_optional(InboxEvent, row)

    async def list_inbox_events(
        self, state: InboxState, *, limit: int = 50, offset: int = 0
    ) -> list[InboxEvent]:
        """Events in a state, newest first (the admin view of dead events)."""
        if limit <= 0:
            return []
        rows = await self._db.fetch(
            """select * from public.whatsapp_inbox_events where state = $1
                order by received_at desc, seq desc limit $2 offset $3""",
            state.value,
            limit,
            max(offset, 0),
        )
        return parse_all(InboxEvent, rows)


class InboxNotifications:
    """LISTEN on the inbox's channel over a connection of its own; calls `on_notify` for each
    notification and after every (re)connection (something may have arrived meanwhile)."""

    def __init__(
        self, database: Database, on_notify: Callable[[], None], *, retry_seconds: float = 1.0
    ) -> None:
        self._db = database
        self._on_notify = on_notify
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    @property
    def supported(self) -> bool:
        # Behind a transaction-mode pooler a LISTEN would hold no server connection.
        return not self._db.options.transaction_pooler

    def start(self) -> None:
        if self.supported and self._task is None:
            self._task = asyncio.create_task(self._run(), name="inbox-notifications")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            connection: asyncpg.Connection[asyncpg.Record] | None = None
            try:
                connection = await asyncpg.connect(
                    self._db.dsn, timeout=self._db.options.timeout_seconds
                )
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(NOTIFY_CHANNEL, self._notified)
                self._on_notify()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Inbox notifications unavailable (%s); polling", type(exc).__name__)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=1))
            await asyncio.sleep(self._retry_seconds)

    def _notified(self, *_args: object) -> None:
        self._on_notify()
