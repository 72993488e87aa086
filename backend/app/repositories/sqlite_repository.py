"""`WhatsAppRepository` on an embedded SQLite file (aiosqlite, WAL): the default store.

Created and migrated on first use. Every operation runs in one transaction; writes take the
database write lock up front (`BEGIN IMMEDIATE`), so claims and get-or-create are safe across
processes sharing the file, and the unique indexes back that up as in Postgres. Inside one
process an asyncio lock serialises operations on the single connection (SQLite has one writer
at a time anyway).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import aiosqlite
import orjson
from pydantic import BaseModel, ValidationError

from app.core.phone import try_normalize_phone
from app.repositories.errors import StoreConstraintError, StoreError, StoreUnavailableError
from app.repositories.group_commit import GroupCommit
from app.repositories.models import (
    ACCEPTED_OUTBOUND_STATUSES,
    Company,
    Conversation,
    ConversationResult,
    ConversationStatus,
    InboundWithReplies,
    InboxEvent,
    InboxLease,
    InboxRecordResult,
    InboxState,
    Message,
    MessageAppendResult,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    OutboundMessage,
    OutboundRecordResult,
    OutboundStatus,
    OutboundStatusChange,
    Profile,
    SentRecord,
    UserSession,
    WhatsAppConversationMetadata,
    outbound_status_allowed,
)
from app.repositories.sqlite_schema import MIGRATIONS

ModelT = TypeVar("ModelT", bound=BaseModel)
RowT = TypeVar("RowT")

WHATSAPP = "whatsapp"
_JSON_COLUMNS = ("metadata", "payload")
_CLAIMABLE = """
    ((e.state = 'pending' and e.next_attempt_at <= :now)
      or (e.state = 'processing' and e.lease_expires_at <= :now))
    and (e.conversation_key is null or (
      not exists (
        select 1 from whatsapp_inbox_events older
         where older.conversation_key = e.conversation_key
           and older.seq < e.seq
           and older.state in ('pending', 'processing'))
      and not exists (
        select 1 from whatsapp_inbox_events busy
         where busy.conversation_key = e.conversation_key
           and busy.state = 'processing'
           and busy.lease_expires_at > :now
           and busy.id <> e.id)))
"""


def _ts(moment: datetime) -> str:
    """Timestamps as fixed-width UTC text, so comparing text compares time."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _now() -> datetime:
    return datetime.now(UTC)


def _id(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


class SqliteWhatsAppRepository:
    """The embedded store: one SQLite file, same contract as the Supabase repository."""

    def __init__(self, path: str | Path, *, busy_timeout_seconds: float = 15.0) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._inbox_writes = GroupCommit(self._record_inbox_batch)

    @property
    def backend_name(self) -> str:
        return "sqlite"

    @property
    def path(self) -> Path:
        return self._path

    async def aclose(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None

    # --- plumbing ---------------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        if self._connection is not None:
            return self._connection
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE for writes).
        connection = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            connection.row_factory = aiosqlite.Row
            await connection.execute(f"pragma busy_timeout = {self._busy_timeout_ms}")
            await self._enable_wal(connection)
            await connection.execute("pragma synchronous = normal")
            await connection.execute("pragma foreign_keys = on")
            await self._migrate(connection)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        return connection

    async def _enable_wal(self, connection: aiosqlite.Connection) -> None:
        """Switch the file to WAL (it stays so). Switching needs the file to itself, and SQLite
        answers "locked" at once, without its busy wait, when another connection is opening
        the same new file at that moment: retry for as long as the busy timeout allows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout_ms / 1000
        while True:
            try:
                await connection.execute("pragma journal_mode = wal")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.01)

    @staticmethod
    async def _migrate(connection: aiosqlite.Connection) -> None:
        await connection.execute("begin immediate")
        try:
            async with connection.execute("pragma user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await connection.execute(statement)
                await connection.execute(f"pragma user_version = {number}")
            await connection.execute("commit")
        except BaseException:
            await connection.execute("rollback")
            raise

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction, with SQLite's errors turned into store errors."""
        async with self._lock, self._store_errors():
            connection = await self._connect()
            await connection.execute("begin immediate" if write else "begin")
            try:
                yield connection
            except BaseException:
                await connection.execute("rollback")
                raise
            await connection.execute("commit")

    async def _statement(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[dict[str, object]]:
        """One statement on its own: atomic by itself in autocommit mode, so it needs no
        begin/commit — one trip to aiosqlite's thread instead of three."""
        async with self._lock, self._store_errors():
            connection = await self._connect()
            return await self._fetch_all(connection, sql, params)

    @asynccontextmanager
    async def _store_errors(self) -> AsyncIterator[None]:
        """SQLite's errors as store errors."""
        try:
            yield
        except sqlite3.IntegrityError as err:
            raise StoreConstraintError(f"sqlite: {err}") from err
        except sqlite3.OperationalError as err:
            # Locked beyond the busy timeout, disk full or unreadable, cannot open the file.
            raise StoreUnavailableError(f"sqlite: {err}") from err
        except (sqlite3.Error, ValueError) as err:
            raise StoreError(f"sqlite: {err}") from err
        except OSError as err:
            # The file's directory cannot be created or read.
            raise StoreUnavailableError(f"sqlite file {self._path}: {err}") from err

    @staticmethod
    async def _fetch_all(
        connection: aiosqlite.Connection,
        sql: str,
        params: Sequence[object] | Mapping[str, object] = (),
    ) -> list[dict[str, object]]:
        # One trip to aiosqlite's thread (execute + fetch), not three (execute, fetch, close).
        rows = await connection.execute_fetchall(sql, params)
        return [_decode(row) for row in rows]

    async def _fetch_one(
        self,
        connection: aiosqlite.Connection,
        sql: str,
        params: Sequence[object] | Mapping[str, object] = (),
    ) -> dict[str, object] | None:
        rows = await self._fetch_all(connection, sql, params)
        return rows[0] if rows else None

    async def _read_one(
        self, model: type[ModelT], sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> ModelT | None:
        rows = await self._statement(sql, params)
        return _parse(model, rows[0]) if rows else None

    async def _read_all(
        self, model: type[ModelT], sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[ModelT]:
        return [_parse(model, row) for row in await self._statement(sql, params)]

    async def _write_returning_one(
        self, model: type[ModelT], sql: str, params: Sequence[object] | Mapping[str, object]
    ) -> ModelT | None:
        rows = await self._statement(sql, params)
        return _parse(model, rows[0]) if rows else None

    async def ping(self) -> None:
        await self._statement("select 1")

    # --- users and companies ----------------------------------------------------------------

    async def create_profile(
        self,
        *,
        phone: str | None,
        full_name: str | None = None,
        email: str | None = None,
        profile_id: UUID | None = None,
    ) -> Profile:
        now = _ts(_now())
        row = await self._write_returning_one(
            Profile,
            """insert into profiles
                 (id, phone, phone_e164, full_name, email, created_at, updated_at)
               values (?, ?, ?, ?, ?, ?, ?) returning *""",
            (
                str(profile_id or uuid.uuid4()),
                phone,
                try_normalize_phone(phone),
                full_name,
                email,
                now,
                now,
            ),
        )
        return _required(row, "profile")

    async def get_profile(self, user_id: UUID) -> Profile | None:
        return await self._read_one(Profile, "select * from profiles where id = ?", (str(user_id),))

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        return await self._read_one(
            Profile,
            """select * from profiles where phone_e164 = ?
               order by phone_verified desc, created_at desc limit 1""",
            (e164,),
        )

    async def create_company(
        self, *, business_name: str, rut: str | None = None, trade_name: str | None = None
    ) -> Company:
        now = _ts(_now())
        row = await self._write_returning_one(
            Company,
            """insert into companies (id, rut, business_name, trade_name, created_at, updated_at)
               values (?, ?, ?, ?, ?, ?) returning *""",
            (str(uuid.uuid4()), rut, business_name, trade_name, now, now),
        )
        return _required(row, "company")

    async def create_session(
        self,
        *,
        user_id: UUID,
        company_id: UUID,
        is_active: bool = True,
        last_accessed_at: datetime | None = None,
    ) -> UserSession:
        row = await self._write_returning_one(
            UserSession,
            """insert into sessions
                 (id, user_id, company_id, is_active, last_accessed_at, created_at)
               values (?, ?, ?, ?, ?, ?) returning *""",
            (
                str(uuid.uuid4()),
                str(user_id),
                str(company_id),
                int(is_active),
                _ts(last_accessed_at) if last_accessed_at else None,
                _ts(_now()),
            ),
        )
        return _required(row, "session")

    async def get_active_company(self, user_id: UUID) -> Company | None:
        return await self._read_one(
            Company,
            """select c.* from sessions s join companies c on c.id = s.company_id
                where s.user_id = ? and s.is_active = 1
                order by s.last_accessed_at is null, s.last_accessed_at desc, s.created_at desc
                limit 1""",
            (str(user_id),),
        )

    async def list_user_companies(self, user_id: UUID) -> list[Company]:
        return await self._read_all(
            Company,
            """select distinct c.* from sessions s join companies c on c.id = s.company_id
                where s.user_id = ? and s.is_active = 1
                order by c.created_at, c.id""",
            (str(user_id),),
        )

    # --- conversations ----------------------------------------------------------------------

    async def get_or_create_conversation(
        self,
        *,
        kapso_conversation_id: str,
        user_id: UUID,
        metadata: WhatsAppConversationMetadata,
        title: str | None = None,
    ) -> ConversationResult:
        data = metadata.creation_json()
        data.update(channel=WHATSAPP, kapso_conversation_id=kapso_conversation_id)
        now = _ts(_now())
        # The write lock is held from the lookup to the insert: no other process can slip in.
        async with self._transaction(write=True) as connection:
            existing = await self._fetch_one(
                connection, _CONVERSATION_BY_KAPSO_ID, (kapso_conversation_id,)
            )
            if existing is not None:
                return ConversationResult(
                    conversation=_parse(Conversation, existing), created=False
                )
            row = await self._fetch_one(
                connection,
                """insert into conversations
                     (id, user_id, title, status, metadata, created_at, updated_at)
                   values (?, ?, ?, 'active', ?, ?, ?) returning *""",
                (
                    str(uuid.uuid4()),
                    str(user_id),
                    title or "Nueva conversación",
                    _json_text(data),
                    now,
                    now,
                ),
            )
        return ConversationResult(
            conversation=_parse(Conversation, _required(row, "conversation")), created=True
        )

    async def get_conversation(self, conversation_id: UUID) -> Conversation | None:
        return await self._read_one(
            Conversation, "select * from conversations where id = ?", (str(conversation_id),)
        )

    async def find_conversation_by_kapso_id(
        self, kapso_conversation_id: str
    ) -> Conversation | None:
        return await self._read_one(
            Conversation, _CONVERSATION_BY_KAPSO_ID, (kapso_conversation_id,)
        )

    async def find_latest_conversation_for_phone(
        self, phone: str, *, business_phone_number_id: str | None = None
    ) -> Conversation | None:
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        return await self._read_one(
            Conversation,
            """select * from conversations
                where json_extract(metadata, '$.channel') = 'whatsapp'
                  and json_extract(metadata, '$.phone_number') = :phone
                  and (:business is null
                       or json_extract(metadata, '$.business_phone_number_id') = :business)
                order by updated_at desc, id desc limit 1""",
            {"phone": e164, "business": business_phone_number_id},
        )

    async def update_conversation(
        self,
        conversation_id: UUID,
        *,
        metadata: WhatsAppConversationMetadata | None = None,
        status: ConversationStatus | None = None,
    ) -> Conversation | None:
        patch = metadata.patch_json() if metadata else {}
        async with self._transaction(write=True) as connection:
            current = await self._fetch_one(
                connection, "select * from conversations where id = ?", (str(conversation_id),)
            )
            if current is None:
                return None
            merged = dict(_as_object(current["metadata"]))
            merged.update(patch)
            row = await self._fetch_one(
                connection,
                """update conversations
                      set metadata = ?, status = coalesce(?, status), updated_at = ?
                    where id = ? returning *""",
                (
                    _json_text(merged),
                    status.value if status else None,
                    _ts(_now()),
                    str(conversation_id),
                ),
            )
        return _parse(Conversation, row) if row else None

    async def list_company_conversations(
        self, company_id: UUID, *, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        return await self._read_all(
            Conversation,
            """select * from conversations
                where json_extract(metadata, '$.channel') = 'whatsapp'
                  and json_extract(metadata, '$.company_id') = ?
                order by updated_at desc, id desc limit ? offset ?""",
            (str(company_id), limit, max(offset, 0)),
        )

    # --- messages ---------------------------------------------------------------------------

    async def append_message(self, message: NewMessage) -> MessageAppendResult:
        async with self._transaction(write=True) as connection:
            return await self._append_message_in(connection, message, _ts(_now()))

    async def _append_message_in(
        self, connection: aiosqlite.Connection, message: NewMessage, now: str
    ) -> MessageAppendResult:
        metadata = message.metadata.model_dump(mode="json", exclude_none=True)
        wamid = message.metadata.whatsapp_message_id
        if message.metadata.channel == WHATSAPP and wamid is not None:
            existing = await self._fetch_one(connection, _MESSAGE_BY_WAMID, (wamid,))
            if existing is not None:
                return MessageAppendResult(message=_parse(Message, existing), created=False)
        row = await self._fetch_one(
            connection,
            """insert into messages
                 (id, conversation_id, user_id, role, content, metadata, created_at)
               values (?, ?, ?, ?, ?, ?, ?) returning *""",
            (
                str(uuid.uuid4()),
                str(message.conversation_id),
                _id(message.user_id),
                message.role.value,
                message.content,
                _json_text(metadata),
                now,
            ),
        )
        await connection.execute(
            "update conversations set updated_at = ? where id = ?",
            (now, str(message.conversation_id)),
        )
        return MessageAppendResult(message=_parse(Message, _required(row, "message")), created=True)

    async def list_messages(
        self, conversation_id: UUID, *, limit: int = 50, offset: int = 0, newest_first: bool = False
    ) -> list[Message]:
        if limit <= 0:
            return []
        direction = "desc" if newest_first else "asc"
        return await self._read_all(
            Message,
            f"""select * from messages where conversation_id = ?
                 order by created_at {direction}, id {direction} limit ? offset ?""",  # noqa: S608 - direction is one of two literals
            (str(conversation_id), limit, max(offset, 0)),
        )

    async def find_message_by_wamid(self, wamid: str) -> Message | None:
        return await self._read_one(Message, _MESSAGE_BY_WAMID, (wamid,))

    async def latest_message(
        self, conversation_id: UUID, *, role: MessageRole | None = None
    ) -> Message | None:
        return await self._read_one(
            Message,
            """select * from messages
                where conversation_id = :conversation and (:role is null or role = :role)
                order by created_at desc, id desc limit 1""",
            {"conversation": str(conversation_id), "role": role.value if role else None},
        )

    # --- webhook inbox ----------------------------------------------------------------------

    async def record_inbox_events(self, events: Sequence[NewInboxEvent]) -> list[InboxRecordResult]:
        if not events:
            return []
        # Deliveries arriving while a write is in progress are recorded together in the next
        # transaction (one insert statement, one commit).
        return await self._inbox_writes.submit(events)

    async def _record_inbox_batch(
        self, batch: Sequence[Sequence[NewInboxEvent]]
    ) -> list[list[InboxRecordResult]]:
        now = _ts(_now())
        rows = [
            (
                str(uuid.uuid4()),
                event.idempotency_key,
                event.event,
                event.wamid or None,
                event.conversation_key or None,
                _json_text(event.payload),
                now,
                now,
                now,
            )
            for events in batch
            for event in events
        ]
        async with self._transaction(write=True) as connection:
            cursor = await connection.executemany(
                """insert into whatsapp_inbox_events
                     (id, idempotency_key, event, wamid, conversation_key, payload,
                      next_attempt_at, received_at, updated_at)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   on conflict do nothing""",
                rows,
            )
            inserted = {row[0] for row in rows}
            if cursor.rowcount != len(rows):
                # Some were duplicates (of stored events, or of each other): which are ours?
                placeholders = ", ".join("?" * len(rows))
                found = await self._fetch_all(
                    connection,
                    f"select id from whatsapp_inbox_events where id in ({placeholders})",  # noqa: S608 - placeholders only
                    [row[0] for row in rows],
                )
                inserted = {str(row["id"]) for row in found}
            results: list[list[InboxRecordResult]] = []
            position = 0
            for events in batch:
                recorded: list[InboxRecordResult] = []
                for event in events:
                    new_id = rows[position][0]
                    position += 1
                    if new_id in inserted:
                        recorded.append(_record_result(new_id, event, is_new=True))
                        continue
                    existing = await self._fetch_one(
                        connection,
                        """select id from whatsapp_inbox_events
                            where idempotency_key = ? or (wamid = ? and event = ?)
                            order by seq limit 1""",
                        (event.idempotency_key, event.wamid or None, event.event),
                    )
                    existing_id = str(_required(existing, "inbox event")["id"])
                    recorded.append(_record_result(existing_id, event, is_new=False))
                results.append(recorded)
        return results

    async def claim_inbox_events(
        self, *, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[InboxEvent]:
        now = _now()
        params = {
            "now": _ts(now),
            "owner": owner,
            "limit": max(limit, 0),
            "lease_expires_at": _ts(now + timedelta(seconds=lease_seconds)),
            "max_attempts": max_attempts,
        }
        async with self._transaction(write=True) as connection:
            # An expired lease on the last allowed attempt: dead, not handed out forever.
            await connection.execute(
                """update whatsapp_inbox_events
                      set state = 'dead', lease_owner = null, lease_expires_at = null,
                          last_error = coalesce(last_error || char(10), '')
                                       || 'lease expired on the last attempt',
                          updated_at = :now
                    where state = 'processing' and lease_expires_at <= :now
                      and attempts >= :max_attempts""",
                params,
            )
            rows = await self._fetch_all(
                connection,
                f"""update whatsapp_inbox_events
                       set state = 'processing', attempts = attempts + 1, lease_owner = :owner,
                           lease_expires_at = :lease_expires_at, updated_at = :now
                     where id in (select e.id from whatsapp_inbox_events e
                                   where {_CLAIMABLE} order by e.seq limit :limit)
                    returning *""",  # noqa: S608 - a constant fragment, values are bound
                params,
            )
            conversations = await self._conversations_by_kapso_id(
                connection,
                {str(row["conversation_key"]) for row in rows if row["conversation_key"]},
            )
        events = [
            _parse(InboxEvent, row).model_copy(
                update={
                    "conversation": conversations.get(str(row["conversation_key"]))
                    if row["conversation_key"]
                    else None
                }
            )
            for row in rows
        ]
        return sorted(events, key=lambda event: event.seq)

    async def _conversations_by_kapso_id(
        self, connection: aiosqlite.Connection, kapso_ids: set[str]
    ) -> dict[str, Conversation]:
        if not kapso_ids:
            return {}
        placeholders = ", ".join("?" * len(kapso_ids))
        rows = await self._fetch_all(
            connection,
            f"""select * from conversations
                 where json_extract(metadata, '$.channel') = 'whatsapp'
                   and json_extract(metadata, '$.kapso_conversation_id')
                       in ({placeholders})""",  # noqa: S608 - placeholders only
            sorted(kapso_ids),
        )
        found = (_parse(Conversation, row) for row in rows)
        return {
            conversation.metadata.kapso_conversation_id: conversation
            for conversation in found
            if conversation.metadata.kapso_conversation_id
        }

    async def extend_inbox_lease(
        self, event_id: UUID, *, owner: str, lease_seconds: float
    ) -> InboxEvent | None:
        now = _now()
        return await self._write_returning_one(
            InboxEvent,
            """update whatsapp_inbox_events set lease_expires_at = ?, updated_at = ?
                where id = ? and state = 'processing' and lease_owner = ? returning *""",
            (_ts(now + timedelta(seconds=lease_seconds)), _ts(now), str(event_id), owner),
        )

    async def complete_inbox_event(self, event_id: UUID, *, owner: str) -> InboxEvent | None:
        now = _ts(_now())
        return await self._write_returning_one(
            InboxEvent, _COMPLETE_INBOX_EVENT, (now, now, str(event_id), owner)
        )

    async def _complete_in(
        self, connection: aiosqlite.Connection, event_id: UUID, owner: str, now: str
    ) -> InboxEvent | None:
        row = await self._fetch_one(
            connection, _COMPLETE_INBOX_EVENT, (now, now, str(event_id), owner)
        )
        return _parse(InboxEvent, row) if row else None

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
        now = _now()
        return await self._write_returning_one(
            InboxEvent,
            """update whatsapp_inbox_events
                  set state = case when :permanent or attempts >= :max_attempts
                                   then 'dead' else 'pending' end,
                      next_attempt_at = case when :permanent or attempts >= :max_attempts
                                             then next_attempt_at else :retry_at end,
                      lease_owner = null, lease_expires_at = null,
                      last_error = substr(:error, 1, 4000), updated_at = :now
                where id = :id and state = 'processing' and lease_owner = :owner
            returning *""",
            {
                "permanent": int(permanent),
                "max_attempts": max_attempts,
                "retry_at": _ts(now + timedelta(seconds=max(retry_delay_seconds, 0.0))),
                "error": error,
                "now": _ts(now),
                "id": str(event_id),
                "owner": owner,
            },
        )

    async def requeue_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        now = _ts(_now())
        return await self._write_returning_one(
            InboxEvent,
            """update whatsapp_inbox_events
                  set state = 'pending', attempts = 0, next_attempt_at = ?, completed_at = null,
                      updated_at = ?
                where id = ? and state = 'dead' returning *""",
            (now, now, str(event_id)),
        )

    async def get_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        return await self._read_one(
            InboxEvent, "select * from whatsapp_inbox_events where id = ?", (str(event_id),)
        )

    async def list_inbox_events(
        self, state: InboxState, *, limit: int = 50, offset: int = 0
    ) -> list[InboxEvent]:
        if limit <= 0:
            return []
        return await self._read_all(
            InboxEvent,
            """select * from whatsapp_inbox_events where state = ?
                order by received_at desc, seq desc limit ? offset ?""",
            (state.value, limit, max(offset, 0)),
        )

    # --- outbound messages ------------------------------------------------------------------

    async def record_outbound(
        self, message: NewOutboundMessage, *, count_attempt: bool = False
    ) -> OutboundRecordResult:
        async with self._transaction(write=True) as connection:
            return await self._record_outbound_in(
                connection, message, _ts(_now()), count_attempt=count_attempt
            )

    async def _record_outbound_in(
        self,
        connection: aiosqlite.Connection,
        message: NewOutboundMessage,
        now: str,
        *,
        count_attempt: bool = False,
    ) -> OutboundRecordResult:
        existing = await self._fetch_one(
            connection,
            """select * from whatsapp_outbound_messages
                where (:key is not null and idempotency_key = :key
                       and coalesce(user_id, '') = coalesce(:user_id, ''))
                   or (:wamid is not null and wamid = :wamid)
                limit 1""",
            {
                "key": message.idempotency_key,
                "user_id": _id(message.user_id),
                "wamid": message.wamid,
            },
        )
        if existing is not None:
            return OutboundRecordResult(message=_parse(OutboundMessage, existing), created=False)
        row = await self._fetch_one(
            connection,
            """insert into whatsapp_outbound_messages
                 (id, wamid, conversation_id, kapso_conversation_id, company_id, user_id,
                  to_phone, business_phone_number_id, message_type, purpose, inbox_event_id,
                  status, error_code, error_message, idempotency_key, request_fingerprint,
                  content, send_attempts, last_attempt_at, created_at, updated_at)
               values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               returning *""",
            (
                str(uuid.uuid4()),
                message.wamid,
                _id(message.conversation_id),
                message.kapso_conversation_id,
                _id(message.company_id),
                _id(message.user_id),
                try_normalize_phone(message.to_phone) or message.to_phone,
                message.business_phone_number_id,
                message.message_type,
                message.purpose,
                _id(message.inbox_event_id),
                message.status.value,
                message.error_code,
                message.error_message,
                message.idempotency_key,
                message.request_fingerprint,
                message.content,
                1 if count_attempt else 0,
                now if count_attempt else None,
                now,
                now,
            ),
        )
        return OutboundRecordResult(
            message=_parse(OutboundMessage, _required(row, "outbound message")), created=True
        )

    async def mark_outbound_attempt(self, outbound_id: UUID) -> OutboundMessage:
        now = _ts(_now())
        message = await self._write_returning_one(
            OutboundMessage,
            """update whatsapp_outbound_messages
                  set send_attempts = send_attempts + 1, last_attempt_at = ?, updated_at = ?
                where id = ? returning *""",
            (now, now, str(outbound_id)),
        )
        if message is None:
            raise StoreConstraintError(f"no outbound message {outbound_id}")
        return message

    async def advance_outbound_status(
        self,
        outbound_id: UUID,
        status: OutboundStatus,
        *,
        wamid: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        async with self._transaction(write=True) as connection:
            return await self._advance_in(
                connection, "id", str(outbound_id), status, wamid, error_code, error_message
            )

    async def advance_outbound_status_by_wamid(
        self,
        wamid: str,
        status: OutboundStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        async with self._transaction(write=True) as connection:
            return await self._advance_in(
                connection, "wamid", wamid, status, None, error_code, error_message
            )

    async def _advance_in(
        self,
        connection: aiosqlite.Connection,
        key_column: str,
        key: str,
        status: OutboundStatus,
        set_wamid: str | None,
        error_code: str | None,
        error_message: str | None,
    ) -> OutboundStatusChange | None:
        column = "wamid" if key_column == "wamid" else "id"
        row = await self._fetch_one(
            connection,
            f"select * from whatsapp_outbound_messages where {column} = ?",  # noqa: S608 - fixed column name
            (key,),
        )
        if row is None:
            return None
        current = _parse(OutboundMessage, row)
        if current.status is not status and outbound_status_allowed(current.status, status):
            row = await self._fetch_one(
                connection,
                """update whatsapp_outbound_messages
                      set status = ?, wamid = coalesce(wamid, ?),
                          error_code = coalesce(?, error_code),
                          error_message = coalesce(?, error_message), updated_at = ?
                    where id = ? returning *""",
                (status.value, set_wamid, error_code, error_message, _ts(_now()), str(current.id)),
            )
        elif set_wamid is not None and current.wamid is None:
            row = await self._fetch_one(
                connection,
                """update whatsapp_outbound_messages set wamid = ?, updated_at = ?
                    where id = ? returning *""",
                (set_wamid, _ts(_now()), str(current.id)),
            )
        else:
            return OutboundStatusChange(
                message=current, changed=False, previous_status=current.status
            )
        return OutboundStatusChange(
            message=_parse(OutboundMessage, _required(row, "outbound message")),
            changed=True,
            previous_status=current.status,
        )

    async def get_outbound(self, outbound_id: UUID) -> OutboundMessage | None:
        return await self._read_one(
            OutboundMessage,
            "select * from whatsapp_outbound_messages where id = ?",
            (str(outbound_id),),
        )

    async def find_outbound_by_wamid(self, wamid: str) -> OutboundMessage | None:
        return await self._read_one(
            OutboundMessage, "select * from whatsapp_outbound_messages where wamid = ?", (wamid,)
        )

    async def find_outbound_by_idempotency_key(
        self, idempotency_key: str, *, user_id: UUID | None
    ) -> OutboundMessage | None:
        return await self._read_one(
            OutboundMessage,
            """select * from whatsapp_outbound_messages
                where idempotency_key = ? and coalesce(user_id, '') = coalesce(?, '') limit 1""",
            (idempotency_key, _id(user_id)),
        )

    async def list_outbound_for_inbox_event(self, inbox_event_id: UUID) -> list[OutboundMessage]:
        return await self._read_all(
            OutboundMessage,
            """select * from whatsapp_outbound_messages where inbox_event_id = ?
                order by created_at, id""",
            (str(inbox_event_id),),
        )

    # --- combined operations ----------------------------------------------------------------

    async def record_inbound_with_replies(
        self,
        message: NewMessage,
        replies: Sequence[NewOutboundMessage],
        *,
        count_first_attempt: bool,
    ) -> InboundWithReplies:
        now = _ts(_now())
        async with self._transaction(write=True) as connection:
            stored = await self._append_message_in(connection, message, now)
            recorded = [
                await self._record_outbound_in(
                    connection, reply, now, count_attempt=count_first_attempt and index == 0
                )
                for index, reply in enumerate(replies)
            ]
        return InboundWithReplies(message=stored, replies=recorded)

    async def record_sent(
        self,
        outbound_id: UUID,
        *,
        wamid: str,
        message: NewMessage | None = None,
        complete: InboxLease | None = None,
    ) -> SentRecord:
        now = _ts(_now())
        async with self._transaction(write=True) as connection:
            change = await self._advance_in(
                connection, "id", str(outbound_id), OutboundStatus.SENT, wamid, None, None
            )
            stored = None
            if (
                message is not None
                and change is not None
                and change.message.status in ACCEPTED_OUTBOUND_STATUSES
            ):
                stored = await self._append_message_in(connection, message, now)
            completed = None
            if complete is not None:
                completed = await self._complete_in(
                    connection, complete.event_id, complete.owner, now
                )
        return SentRecord(change=change, message=stored, completed=completed)

    async def find_latest_outbound_to(
        self, to_phone: str, *, purpose: str
    ) -> OutboundMessage | None:
        return await self._read_one(
            OutboundMessage,
            """select * from whatsapp_outbound_messages where to_phone = ? and purpose = ?
                order by created_at desc limit 1""",
            (try_normalize_phone(to_phone) or to_phone, purpose),
        )


_COMPLETE_INBOX_EVENT = """
    update whatsapp_inbox_events
       set state = 'done', lease_owner = null, lease_expires_at = null,
           completed_at = ?, updated_at = ?
     where id = ? and state = 'processing' and lease_owner = ? returning *
"""

_CONVERSATION_BY_KAPSO_ID = """
    select * from conversations
     where json_extract(metadata, '$.channel') = 'whatsapp'
       and json_extract(metadata, '$.kapso_conversation_id') = ?
"""

_MESSAGE_BY_WAMID = """
    select * from messages
     where json_extract(metadata, '$.channel') = 'whatsapp'
       and json_extract(metadata, '$.whatsapp_message_id') = ?
"""


def _decode(row: aiosqlite.Row) -> dict[str, object]:
    data: dict[str, object] = dict(row)
    for column in _JSON_COLUMNS:
        value = data.get(column)
        if isinstance(value, str):
            data[column] = orjson.loads(value)
    return data


def _json_text(value: object) -> str:
    """JSON text for a column: orjson (several times faster than json on webhook payloads),
    json for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _as_object(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def _parse(model: type[ModelT], row: Mapping[str, object]) -> ModelT:
    try:
        return model.model_validate(row)
    except ValidationError as err:
        raise StoreError(f"unexpected data in the store: {err.error_count()} errors") from err


def _required(row: RowT | None, what: str) -> RowT:
    if row is None:
        raise StoreError(f"the store returned no {what}")
    return row


def _record_result(event_id: str, event: NewInboxEvent, *, is_new: bool) -> InboxRecordResult:
    return InboxRecordResult(
        event_id=UUID(event_id), idempotency_key=event.idempotency_key, is_new=is_new
    )
