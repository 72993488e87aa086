"""`OutboundStore`: every message the service sends through Kapso, recorded before it is sent.

The exactly-once protocol lives in services/whatsapp/outbound.py; this store keeps its rules
that belong to the data: one row per (caller, idempotency key) and per wamid (unique indexes),
and a status that only moves forward (`whatsapp_outbound_status_allowed`, the same function the
table's trigger enforces for any other writer).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from app.core.phone import try_normalize_phone
from app.db.pool import Connection, Database, Record
from app.repositories.errors import StoreConstraintError
from app.repositories.models import (
    NewOutboundMessage,
    OutboundMessage,
    OutboundRecordResult,
    OutboundStatus,
    OutboundStatusChange,
)
from app.repositories.rows import parse, parse_all, parse_optional, required

_NO_USER = "00000000-0000-0000-0000-000000000000"


def _advance_sql(key: Literal["id", "wamid"]) -> str:
    """Move a message's status forward (and set its wamid once known) in one statement; a
    backward or equal status changes nothing. Returns the row, the status before, and whether
    anything changed."""
    return f"""
      with current_row as (
        select id, status, wamid from public.whatsapp_outbound_messages
         where {key} = $1 for update
      ), moved as (
        update public.whatsapp_outbound_messages o
           set status = case when moves then $2 else o.status end,
               wamid = coalesce(o.wamid, $3),
               error_code = case when moves then coalesce($4, o.error_code) else o.error_code end,
               error_message = case when moves then coalesce($5, o.error_message)
                                    else o.error_message end
          from (select c.id, c.status <> $2
                         and public.whatsapp_outbound_status_allowed(c.status, $2) as moves,
                       c.wamid is null and $3::text is not null as gets_wamid
                  from current_row c) d
         where o.id = d.id and (d.moves or d.gets_wamid)
        returning o.*
      )
      select m.*, c.status as previous_status, true as changed
        from moved m, current_row c
      union all
      select o.*, c.status, false
        from public.whatsapp_outbound_messages o join current_row c on o.id = c.id
       where not exists (select 1 from moved)
    """  # noqa: S608 - `key` is one of two column names


_ADVANCE_BY_ID = _advance_sql("id")
_ADVANCE_BY_WAMID = _advance_sql("wamid")


class OutboundStore:
    """Outbound messages: record, count attempts, advance status, look up."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record_outbound(
        self, message: NewOutboundMessage, *, tx: Connection | None = None
    ) -> OutboundRecordResult:
        """Record a message before sending it; the same idempotency key (per user) or wamid
        returns the existing row with created=False, and the caller must not send again."""
        async with self._db.connection(tx) as connection:
            row = await self._db.fetchrow(
                """insert into public.whatsapp_outbound_messages
                     (wamid, conversation_id, kapso_conversation_id, company_id, user_id,
                      to_phone, business_phone_number_id, message_type, purpose, inbox_event_id,
                      status, error_code, error_message, idempotency_key, request_fingerprint,
                      content, created_at, updated_at)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                           clock_timestamp(), clock_timestamp())
                   on conflict do nothing
                   returning *""",
                message.wamid,
                message.conversation_id,
                message.kapso_conversation_id,
                message.company_id,
                message.user_id,
                try_normalize_phone(message.to_phone) or message.to_phone,
                message.business_phone_number_id,
                message.message_type,
                message.purpose,
                message.inbox_event_id,
                message.status.value,
                message.error_code,
                message.error_message,
                message.idempotency_key,
                message.request_fingerprint,
                message.content,
                tx=connection,
            )
            if row is not None:
                return OutboundRecordResult(message=parse(OutboundMessage, row), created=True)
            # The conflicting row is committed by now (the insert waited for it).
            existing = await self._db.fetchrow(
                """select * from public.whatsapp_outbound_messages
                    where ($1::text is not null and idempotency_key = $1
                           and coalesce(user_id, $2::uuid) = coalesce($3::uuid, $2::uuid))
                       or ($4::text is not null and wamid = $4)
                    limit 1""",
                message.idempotency_key,
                _NO_USER,
                message.user_id,
                message.wamid,
                tx=connection,
            )
        return OutboundRecordResult(
            message=parse(OutboundMessage, required(existing, "outbound message")),
            created=False,
        )

    async def mark_outbound_attempt(
        self, outbound_id: UUID, *, tx: Connection | None = None
    ) -> OutboundMessage:
        """Count a send attempt (and its time) just before calling Kapso: after a crash, the
        row shows a send may have left. `StoreConstraintError` when there is no such message."""
        row = await self._db.fetchrow(
            """update public.whatsapp_outbound_messages
                  set send_attempts = send_attempts + 1, last_attempt_at = clock_timestamp()
                where id = $1 returning *""",
            outbound_id,
            tx=tx,
        )
        if row is None:
            raise StoreConstraintError(f"no outbound message {outbound_id}")
        return parse(OutboundMessage, row)

    async def advance_outbound_status(
        self,
        outbound_id: UUID,
        status: OutboundStatus,
        *,
        wamid: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        tx: Connection | None = None,
    ) -> OutboundStatusChange | None:
        """Move the status forward (and set the wamid once known); a backward or equal status
        changes nothing. None when there is no such message."""
        row = await self._db.fetchrow(
            _ADVANCE_BY_ID, outbound_id, status.value, wamid, error_code, error_message, tx=tx
        )
        return _status_change(row)

    async def advance_outbound_status_by_wamid(
        self,
        wamid: str,
        status: OutboundStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        tx: Connection | None = None,
    ) -> OutboundStatusChange | None:
        """`advance_outbound_status` for a status webhook, which knows only the wamid."""
        row = await self._db.fetchrow(
            _ADVANCE_BY_WAMID, wamid, status.value, None, error_code, error_message, tx=tx
        )
        return _status_change(row)

    async def get_outbound(self, outbound_id: UUID) -> OutboundMessage | None:
        row = await self._db.fetchrow(
            "select * from public.whatsapp_outbound_messages where id = $1", outbound_id
        )
        return parse_optional(OutboundMessage, row)

    async def find_outbound_by_wamid(self, wamid: str) -> OutboundMessage | None:
        row = await self._db.fetchrow(
            "select * from public.whatsapp_outbound_messages where wamid = $1", wamid
        )
        return parse_optional(OutboundMessage, row)

    async def find_outbound_by_idempotency_key(
        self, idempotency_key: str, *, user_id: UUID | None
    ) -> OutboundMessage | None:
        row = await self._db.fetchrow(
            """select * from public.whatsapp_outbound_messages
                where idempotency_key = $1
                  and coalesce(user_id, $2::uuid) = coalesce($3::uuid, $2::uuid)
                limit 1""",
            idempotency_key,
            _NO_USER,
            user_id,
        )
        return parse_optional(OutboundMessage, row)

    async def list_outbound_for_inbox_event(self, inbox_event_id: UUID) -> list[OutboundMessage]:
        """The messages sent (or being sent) for an inbound event, oldest first: what an earlier
        attempt at the event already decided to send."""
        rows = await self._db.fetch(
            """select * from public.whatsapp_outbound_messages where inbox_event_id = $1
                order by created_at, id""",
            inbox_event_id,
        )
        return parse_all(OutboundMessage, rows)

    async def find_latest_outbound_to(
        self, to_phone: str, *, purpose: str
    ) -> OutboundMessage | None:
        """The newest message of this purpose sent to this number (any format), e.g. to send
        the registration notice once per period."""
        row = await self._db.fetchrow(
            """select * from public.whatsapp_outbound_messages
                where to_phone = $1 and purpose = $2
                order by created_at desc limit 1""",
            try_normalize_phone(to_phone) or to_phone,
            purpose,
        )
        return parse_optional(OutboundMessage, row)


def _status_change(row: Record | None) -> OutboundStatusChange | None:
    if row is None:
        return None
    data = dict(row)
    previous = data.pop("previous_status")
    changed = bool(data.pop("changed"))
    return OutboundStatusChange(
        message=parse(OutboundMessage, data),
        changed=changed,
        previous_status=OutboundStatus(previous),
    )
