"""An inbound WhatsApp message: authenticate by phone, store it, answer it exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from app.core.clock import Clock, utc_now
from app.core.logging import mask_phone
from app.core.phone import try_normalize_phone
from app.db.pool import Connection
from app.integrations.kapso import KapsoClient, KapsoError
from app.integrations.kapso.webhook_events import MessageEvent
from app.repositories.errors import StoreError
from app.repositories.models import (
    Conversation,
    InboxEvent,
    OutboundMessage,
)
from app.repositories.stores import Stores
from app.services.whatsapp.auth import IdentityStatus, PhoneAuthenticator, WhatsAppIdentity
from app.services.whatsapp.conversation_manager import WhatsAppConversationManager
from app.services.whatsapp.formatting import format_reply
from app.services.whatsapp.outbound import (
    PURPOSE_NO_COMPANY,
    PURPOSE_REGISTRATION,
    PURPOSE_REPLY,
    Delivery,
    OnSent,
    OutboundSender,
    OutboundText,
)
from app.services.whatsapp.processing_errors import PermanentEventError
from app.services.whatsapp.responder import Attachment, Responder, ResponderRequest
from app.services.whatsapp.texts import WhatsAppTexts

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """The knobs of the inbound flow (from settings)."""

    notice_interval: timedelta
    fizko_app_url: str
    default_phone_number_id: str | None


class InboundMessageHandler:
    """`whatsapp.message.received`: the heart of the seed's webhook flow, run by the worker."""

    def __init__(
        self,
        *,
        stores: Stores,
        kapso: KapsoClient,
        authenticator: PhoneAuthenticator,
        conversations: WhatsAppConversationManager,
        sender: OutboundSender,
        responder: Responder,
        texts: WhatsAppTexts,
        policy: InboundPolicy,
        clock: Clock = utc_now,
    ) -> None:
        self._db = stores.database
        self._outbound = stores.outbound
        self._kapso = kapso
        self._authenticator = authenticator
        self._conversations = conversations
        self._sender = sender
        self._responder = responder
        self._texts = texts
        self._policy = policy
        self._clock = clock

    async def handle(self, inbox_event: InboxEvent, event: MessageEvent) -> None:
        """Process the message (again, safely, when an earlier attempt left effects)."""
        phone = try_normalize_phone(event.contact_phone)
        if phone is None:
            # Without a number there is nobody to authenticate and nowhere to answer.
            raise PermanentEventError("inbound message without a usable sender phone number")
        business = event.phone_number_id or self._policy.default_phone_number_id
        kapso_conversation_id = event.conversation_id or f"phone:{phone}:{business or ''}"

        existing = _claimed_conversation(inbox_event, kapso_conversation_id)
        if existing is None:
            existing = await self._conversations.find(kapso_conversation_id)
        identity = await self._identify(phone, existing, business)
        if identity.status is IdentityStatus.UNKNOWN_NUMBER:
            await self._notice(
                inbox_event,
                event,
                phone,
                business,
                PURPOSE_REGISTRATION,
                self._texts.registration.format(
                    greeting=self._texts.greet(event.contact_name),
                    url=self._policy.fizko_app_url,
                ),
            )
            return

        conversation = await self._conversations.ensure(
            kapso_conversation_id=kapso_conversation_id,
            existing=existing,
            identity=identity,
            business_phone_number_id=business,
            contact_name=event.contact_name,
        )
        if identity.company_id is None:
            await self._conversations.store_inbound(conversation, event, identity.user_id)
            await self._notice(
                inbox_event,
                event,
                phone,
                business,
                PURPOSE_NO_COMPANY,
                self._texts.no_active_company.format(
                    greeting=self._texts.greet(event.contact_name),
                    url=self._policy.fizko_app_url,
                ),
                conversation=conversation,
            )
            return

        await self._show_typing(event, business)
        deliveries = await self._plan_reply(
            inbox_event, event, phone, business, identity, conversation
        )
        for delivery in deliveries:
            outcome = await self._sender.deliver(
                delivery, on_sent=self._store_copy(conversation, delivery)
            )
            if outcome.delivered_to_kapso and outcome.wamid and not outcome.on_sent_done:
                # Sent by an earlier attempt (settled now): its copy is stored here.
                await self._conversations.store_outbound(
                    conversation.id,
                    content=delivery.message.content,
                    wamid=outcome.wamid,
                    outbound_id=delivery.row.id,
                )

    def _store_copy(self, conversation: Conversation, delivery: Delivery) -> OnSent:
        """Store the conversation's copy of a reply part with Kapso's acceptance."""

        async def store(tx: Connection, wamid: str) -> None:
            await self._conversations.store_outbound(
                conversation.id,
                content=delivery.message.content,
                wamid=wamid,
                outbound_id=delivery.row.id,
                tx=tx,
            )

        return store

    async def _plan_reply(
        self,
        inbox_event: InboxEvent,
        event: MessageEvent,
        phone: str,
        business: str | None,
        identity: WhatsAppIdentity,
        conversation: Conversation,
    ) -> list[Delivery]:
        """The reply's messages, each recorded before any is sent."""

        def reply(content: str, key: str) -> OutboundText:
            return self._outbound_text(
                inbox_event,
                event,
                phone,
                business,
                PURPOSE_REPLY,
                content,
                key=key,
                conversation=conversation,
                company=identity,
            )

        earlier = await self._earlier_replies(inbox_event)
        if earlier:
            # Re-asking the assistant could word it differently: resend what was decided (the
            # user's message was stored with these records).
            total = len(earlier)
            return self._sender.resume(
                earlier,
                [
                    reply(
                        row.content or "", row.idempotency_key or _reply_key(inbox_event, i, total)
                    )
                    for i, row in enumerate(earlier)
                ],
            )
        if _ran_before(inbox_event):
            # An earlier attempt may have died (a crash, a cancelled task) while the responder
            # ran: the user's message is stored before asking again, so it is never lost.
            await self._conversations.store_inbound(conversation, event, identity.user_id)
        try:
            parts = await self._answer(event, identity, conversation)
        except Exception:
            # The answer failed and will be retried: the user's message is kept meanwhile.
            await self._store_inbound_quietly(conversation, event, identity)
            raise
        messages = [
            reply(part, _reply_key(inbox_event, index, len(parts)))
            for index, part in enumerate(parts)
        ]
        # One transaction: the user's message and every part recorded before any is sent (a
        # retry finds the whole reply).
        async with self._db.transaction() as tx:
            await self._conversations.store_inbound(conversation, event, identity.user_id, tx=tx)
            return await self._sender.record(messages, tx=tx)

    async def _earlier_replies(self, inbox_event: InboxEvent) -> list[OutboundMessage]:
        """The reply parts an earlier attempt at this event recorded."""
        # Only an event that ran before can have recorded replies.
        if not _ran_before(inbox_event):
            return []
        earlier = await self._outbound.list_outbound_for_inbox_event(inbox_event.id)
        replies = [row for row in earlier if row.purpose == PURPOSE_REPLY and row.content]
        # Parts recorded in one transaction share their creation time: order by part number.
        return sorted(replies, key=_part_number)

    async def _store_inbound_quietly(
        self, conversation: Conversation, event: MessageEvent, identity: WhatsAppIdentity
    ) -> None:
        try:
            await self._conversations.store_inbound(conversation, event, identity.user_id)
        except StoreError as exc:
            logger.warning("Could not store the inbound message meanwhile: %s", exc)

    async def _identify(
        self, phone: str, existing: Conversation | None, business: str | None
    ) -> WhatsAppIdentity:
        cached = self._authenticator.cached_identity(phone, existing.metadata if existing else None)
        if cached is not None:
            return cached
        if existing is None:
            # A new Kapso conversation id for a known number keeps the number's cache.
            previous = await self._conversations.previous_for_phone(phone, business)
            if previous is not None:
                cached = self._authenticator.cached_identity(phone, previous.metadata)
                if cached is not None:
                    return cached
        return await self._authenticator.identify(phone)

    async def _answer(
        self, event: MessageEvent, identity: WhatsAppIdentity, conversation: Conversation
    ) -> list[str]:
        """A fresh answer from the responder, formatted for WhatsApp and split into parts."""
        assert identity.user_id is not None
        assert identity.company_id is not None
        answer = await self._responder.reply(
            ResponderRequest(
                user_id=identity.user_id,
                company_id=identity.company_id,
                conversation_id=conversation.id,
                text=event.text or "",
                attachments=_attachments(event),
                contact_name=event.contact_name,
            )
        )
        return format_reply(answer)

    async def _notice(
        self,
        inbox_event: InboxEvent,
        event: MessageEvent,
        phone: str,
        business: str | None,
        purpose: str,
        text: str,
        *,
        conversation: Conversation | None = None,
    ) -> None:
        """Send a notice (registration, no company) at most once per interval per number."""
        latest = await self._outbound.find_latest_outbound_to(phone, purpose=purpose)
        if (
            latest is not None
            and latest.inbox_event_id != inbox_event.id
            and self._clock() - latest.created_at < self._policy.notice_interval
        ):
            logger.info("Not repeating the %s notice to %s", purpose, mask_phone(phone))
            return
        message = self._outbound_text(
            inbox_event,
            event,
            phone,
            business,
            purpose,
            text,
            key=f"{purpose}:{inbox_event.id}",
            conversation=conversation,
        )
        outcome = await self._sender.send_text_once(message)
        if conversation is not None and outcome.delivered_to_kapso and outcome.wamid:
            await self._conversations.store_outbound(
                conversation.id, content=text, wamid=outcome.wamid, outbound_id=outcome.message.id
            )

    def _outbound_text(
        self,
        inbox_event: InboxEvent,
        event: MessageEvent,
        phone: str,
        business: str | None,
        purpose: str,
        content: str,
        *,
        key: str,
        conversation: Conversation | None = None,
        company: WhatsAppIdentity | None = None,
    ) -> OutboundText:
        return OutboundText(
            idempotency_key=key,
            content=content,
            purpose=purpose,
            to_phone=phone,
            business_phone_number_id=business,
            kapso_conversation_id=event.conversation_id,
            conversation_id=conversation.id if conversation else None,
            company_id=company.company_id if company else None,
            inbox_event_id=inbox_event.id,
            reply_to_wamid=event.wamid,
        )

    async def _show_typing(self, event: MessageEvent, business: str | None) -> None:
        """Mark the message read and show "typing…" while the reply is prepared (best effort)."""
        if not event.wamid:
            return
        try:
            await self._kapso.messages.mark_as_read(
                message_id=event.wamid, phone_number_id=business, typing_indicator=True
            )
        except KapsoError as exc:
            logger.warning("Could not mark %s read: %s", event.wamid, exc)


def _ran_before(inbox_event: InboxEvent) -> bool:
    """A retry (attempts > 1) or a replayed dead event (attempts start over at 1, but its last
    error is kept): an earlier attempt may have left effects behind."""
    return inbox_event.attempts > 1 or inbox_event.last_error is not None


def _claimed_conversation(
    inbox_event: InboxEvent, kapso_conversation_id: str
) -> Conversation | None:
    """The conversation the claim brought with the event, if it is this message's."""
    conversation = inbox_event.conversation
    if conversation is None or conversation.metadata.kapso_conversation_id != kapso_conversation_id:
        return None
    return conversation


def _reply_key(inbox_event: InboxEvent, index: int, total: int) -> str:
    return f"{PURPOSE_REPLY}:{inbox_event.id}:{index + 1}/{total}"


def _part_number(row: OutboundMessage) -> int:
    """The part number `_reply_key` put in the key ("…:2/3" → 2); 0 for another key."""
    number, _, _ = (row.idempotency_key or "").rpartition(":")[2].partition("/")
    return int(number) if number.isdigit() else 0


def _attachments(event: MessageEvent) -> tuple[Attachment, ...]:
    if event.media is None:
        return ()
    media = event.media
    return (
        Attachment(
            kind=event.message_type.value,
            media_id=media.id,
            url=media.url,
            mime_type=media.mime_type,
            filename=media.filename,
            caption=media.caption,
        ),
    )
