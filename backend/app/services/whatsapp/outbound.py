"""Sending through Kapso exactly once: record the intent, send, settle what is uncertain.

Neither Kapso nor Meta offers an idempotency key for sends, so safety comes from our side: each
message is recorded under a unique key before it is sent, carries our id in
`biz_opaque_callback_data`, and a send whose outcome is unknown is never blindly repeated —
it is looked up in Kapso's message history first (and status webhooks settle it too).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from app.core.clock import Clock, utc_now
from app.core.logging import mask_phone
from app.db.pool import Connection
from app.integrations.kapso import (
    KapsoAPIError,
    KapsoAuthenticationError,
    KapsoClient,
    KapsoConflictError,
    KapsoConnectionError,
    KapsoPaymentRequiredError,
    KapsoPermissionError,
    KapsoRateLimitError,
    KapsoServerError,
)
from app.integrations.kapso.models import MessageRecord
from app.repositories.models import (
    ACCEPTED_OUTBOUND_STATUSES,
    NewOutboundMessage,
    OutboundMessage,
    OutboundStatus,
)
from app.repositories.stores import Stores
from app.services.whatsapp.processing_errors import RetryableEventError

logger = logging.getLogger(__name__)

# Clock skew between us and Kapso tolerated when looking back in its history.
_HISTORY_SLACK = timedelta(seconds=5)

# Why a message was sent (`whatsapp_outbound_messages.purpose`).
PURPOSE_REPLY = "reply"
PURPOSE_REGISTRATION = "registration"
PURPOSE_NO_COMPANY = "no_company"
PURPOSE_API = "api"


@dataclass(frozen=True, slots=True)
class OutboundText:
    """One text message to send, under a key that makes it happen once."""

    idempotency_key: str
    content: str
    purpose: str
    to_phone: str
    business_phone_number_id: str | None
    kapso_conversation_id: str | None = None
    conversation_id: UUID | None = None
    company_id: UUID | None = None
    user_id: UUID | None = None
    inbox_event_id: UUID | None = None
    reply_to_wamid: str | None = None


# What to record together with Kapso's acceptance, in the same transaction (e.g. the
# conversation's copy of the message, given its wamid).
OnSent = Callable[[Connection, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A recorded message on its way out. Made only by `OutboundSender.record` (which may have
    begun its first attempt in the recording transaction) or `OutboundSender.resume`."""

    row: OutboundMessage
    message: OutboundText
    # This delivery's attempt is counted already and nothing was sent before it.
    attempt_begun: bool = False


@dataclass(frozen=True, slots=True)
class SendOutcome:
    message: OutboundMessage
    # True when this call (not an earlier attempt) got the message accepted by Kapso.
    sent_now: bool
    # The `on_sent` step ran in the transaction that recorded the acceptance.
    on_sent_done: bool = False

    @property
    def wamid(self) -> str | None:
        return self.message.wamid

    @property
    def delivered_to_kapso(self) -> bool:
        return self.message.status in ACCEPTED_OUTBOUND_STATUSES


class OutboundSender:
    """Sends text messages at most once per idempotency key."""

    def __init__(
        self,
        stores: Stores,
        kapso: KapsoClient,
        *,
        settle_after: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._db = stores.database
        self._outbound = stores.outbound
        self._kapso = kapso
        self._settle_after = settle_after
        self._clock = clock

    async def record(self, messages: Sequence[OutboundText], *, tx: Connection) -> list[Delivery]:
        """Record each message in the caller's transaction (or find the earlier record of its
        key). The first one this call creates has its attempt counted there too: it is sent
        next, and the count saves the transaction a send would otherwise need first."""
        deliveries = []
        begun = False
        for message in messages:
            result = await self._outbound.record_outbound(self.new_record(message), tx=tx)
            row = result.message
            begin = result.created and not begun
            if begin:
                row = await self._outbound.mark_outbound_attempt(row.id, tx=tx)
                begun = True
            deliveries.append(Delivery(row, message, attempt_begun=begin))
        return deliveries

    @staticmethod
    def resume(rows: Sequence[OutboundMessage], messages: Sequence[OutboundText]) -> list[Delivery]:
        """Deliveries of messages an earlier attempt recorded (sent or not, it will check)."""
        return [Delivery(row, message) for row, message in zip(rows, messages, strict=True)]

    @staticmethod
    def new_record(message: OutboundText) -> NewOutboundMessage:
        """The outbound row that records the intent to send `message`."""
        return NewOutboundMessage(
            to_phone=message.to_phone,
            message_type="text",
            purpose=message.purpose,
            content=message.content,
            conversation_id=message.conversation_id,
            kapso_conversation_id=message.kapso_conversation_id,
            company_id=message.company_id,
            user_id=message.user_id,
            business_phone_number_id=message.business_phone_number_id,
            inbox_event_id=message.inbox_event_id,
            idempotency_key=message.idempotency_key,
        )

    async def send_text_once(
        self, message: OutboundText, *, on_sent: OnSent | None = None
    ) -> SendOutcome:
        """Send unless this key was sent already; raise `RetryableEventError` to come back later."""
        async with self._db.transaction() as tx:
            (delivery,) = await self.record([message], tx=tx)
        return await self.deliver(delivery, on_sent=on_sent)

    async def deliver(self, delivery: Delivery, *, on_sent: OnSent | None = None) -> SendOutcome:
        """Send a recorded message, or settle an earlier attempt whose outcome is unknown.
        `on_sent` is recorded with a successful send, in the same transaction."""
        row, message = delivery.row, delivery.message
        if delivery.attempt_begun:
            return await self._send(row, message, on_sent)
        if row.status in ACCEPTED_OUTBOUND_STATUSES or row.status is OutboundStatus.FAILED:
            return SendOutcome(row, sent_now=False)
        if row.status is OutboundStatus.UNKNOWN or row.send_attempts > 0:
            # An earlier attempt may have reached Kapso: look before sending again.
            settled = await self._settle_from_history(row, message)
            if settled is not None:
                return SendOutcome(settled, sent_now=False)
        # Count the attempt first: after a crash, the row shows a send may have left.
        row = await self._outbound.mark_outbound_attempt(row.id)
        return await self._send(row, message, on_sent)

    async def _send(
        self, row: OutboundMessage, message: OutboundText, on_sent: OnSent | None
    ) -> SendOutcome:
        try:
            result = await self._kapso.messages.send_text(
                message=message.content,
                to=message.to_phone,
                phone_number_id=message.business_phone_number_id,
                reply_to=message.reply_to_wamid,
                callback_data=str(row.id),
            )
        except KapsoConnectionError as exc:
            if exc.request_sent:
                await self._outbound.advance_outbound_status(row.id, OutboundStatus.UNKNOWN)
                logger.warning(
                    "Send %s to %s: outcome unknown (%s); will check Kapso's history",
                    row.id,
                    mask_phone(message.to_phone),
                    type(exc).__name__,
                )
            raise self._retry_later(f"Kapso send failed: {exc.message}") from exc
        except (KapsoServerError, KapsoRateLimitError, KapsoConflictError) as exc:
            # Probably not sent (or Kapso's "another message is in flight" outlasted the
            # client's retries); the retry checks Kapso's history before sending again.
            raise self._retry_later(f"Kapso unavailable: {exc}", exc.retry_after) from exc
        except (KapsoAuthenticationError, KapsoPermissionError, KapsoPaymentRequiredError) as exc:
            # Our configuration or account, not the message: retry (and replay once fixed).
            raise self._retry_later(f"Kapso refused our credentials: {exc}") from exc
        except KapsoAPIError as exc:
            # Kapso or Meta rejected this message (e.g. 131047 outside the 24-hour window).
            change = await self._outbound.advance_outbound_status(
                row.id,
                OutboundStatus.FAILED,
                error_code=str(exc.code) if exc.code is not None else str(exc.status_code),
                error_message=exc.message[:500],
            )
            logger.warning("Send %s rejected by Kapso: %s", row.id, exc)
            return SendOutcome(change.message if change else row, sent_now=False)
        return await self.record_sent(row, result.wamid, on_sent)

    async def record_sent(
        self, row: OutboundMessage, wamid: str, on_sent: OnSent | None
    ) -> SendOutcome:
        """Kapso accepted `row` as `wamid`: its status, and `on_sent`, in one transaction."""
        if on_sent is None:
            change = await self._outbound.advance_outbound_status(
                row.id, OutboundStatus.SENT, wamid=wamid
            )
            return SendOutcome(change.message if change else row, sent_now=True)
        async with self._db.transaction() as tx:
            change = await self._outbound.advance_outbound_status(
                row.id, OutboundStatus.SENT, wamid=wamid, tx=tx
            )
            accepted = change is not None and change.message.status in ACCEPTED_OUTBOUND_STATUSES
            if accepted:
                await on_sent(tx, wamid)
        return SendOutcome(change.message if change else row, sent_now=True, on_sent_done=accepted)

    def _retry_later(self, reason: str, retry_after: float | None = None) -> RetryableEventError:
        # An attempt was made: the next one must wait until it can be checked in Kapso's
        # history, or it would spend itself waiting for the settle window.
        settle = self._settle_after.total_seconds()
        return RetryableEventError(reason, retry_after=max(settle, retry_after or 0.0))

    async def _settle_from_history(
        self, row: OutboundMessage, message: OutboundText
    ) -> OutboundMessage | None:
        age = self._clock() - (row.last_attempt_at or row.updated_at)
        if age < self._settle_after:
            raise RetryableEventError(
                "a previous send attempt may still be in flight",
                retry_after=(self._settle_after - age).total_seconds(),
            )
        found = await self._find_in_history(row, message)
        if found is None:
            return None
        change = await self._outbound.advance_outbound_status(
            row.id, OutboundStatus.SENT, wamid=found.id
        )
        logger.info("Send %s settled from Kapso's history", row.id)
        return change.message if change else row

    async def _find_in_history(
        self, row: OutboundMessage, message: OutboundText
    ) -> MessageRecord | None:
        since = row.created_at - _HISTORY_SLACK
        try:
            async for record in self._kapso.messages.iterate(
                phone_number_id=message.business_phone_number_id,
                conversation_id=message.kapso_conversation_id,
                direction="outbound",
                since=since,
            ):
                if not _is_our_message(record, row, message.content):
                    continue
                # The same text may have gone out before (a fixed acknowledgement): a record
                # that is already another message of ours is not this one.
                other = await self._outbound.find_outbound_by_wamid(record.id)
                if other is None or other.id == row.id:
                    return record
        except KapsoAPIError as exc:
            raise RetryableEventError(f"Kapso history unavailable: {exc}") from exc
        return None


def _is_our_message(record: MessageRecord, row: OutboundMessage, content: str) -> bool:
    kapso = record.kapso
    if kapso is None:
        return False
    extra = kapso.model_extra or {}
    statuses = extra.get("statuses")
    callbacks = [
        status.get("biz_opaque_callback_data")
        for status in (statuses if isinstance(statuses, list) else [])
        if isinstance(status, dict) and status.get("biz_opaque_callback_data")
    ]
    if callbacks:
        # Our id travels with the message: it decides, whatever the text.
        return str(row.id) in callbacks
    to = "".join(c for c in (record.to or kapso.phone_number or "") if c.isdigit())
    recipient = "".join(ch for ch in row.to_phone if ch.isdigit())
    return bool(to) and to == recipient and kapso.content == content
