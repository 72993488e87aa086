"""What the inbox worker does with each recorded webhook event."""

from __future__ import annotations

import logging
from uuid import UUID

from app.integrations.kapso.webhook_events import (
    ConversationEvent,
    KapsoEventName,
    MessageDirection,
    MessageEvent,
    MessageOrigin,
    MessageStatus,
)
from app.repositories.models import (
    ACCEPTED_OUTBOUND_STATUSES,
    InboxEvent,
    OutboundMessage,
    OutboundStatus,
    OutboundStatusChange,
)
from app.repositories.outbound import OutboundStore
from app.services.whatsapp.conversation_manager import WhatsAppConversationManager
from app.services.whatsapp.inbound import InboundMessageHandler
from app.services.whatsapp.inbox_codec import decode_inbox_event
from app.services.whatsapp.outbound import PURPOSE_API

logger = logging.getLogger(__name__)

_STATUS_BY_EVENT = {
    KapsoEventName.MESSAGE_SENT.value: OutboundStatus.SENT,
    KapsoEventName.MESSAGE_DELIVERED.value: OutboundStatus.DELIVERED,
    KapsoEventName.MESSAGE_READ.value: OutboundStatus.READ,
    KapsoEventName.MESSAGE_FAILED.value: OutboundStatus.FAILED,
}


class WhatsAppEventProcessor:
    """Dispatches one event: inbound messages, echoes, statuses, conversation changes."""

    def __init__(
        self,
        *,
        outbound: OutboundStore,
        conversations: WhatsAppConversationManager,
        inbound: InboundMessageHandler,
    ) -> None:
        self._outbound = outbound
        self._conversations = conversations
        self._inbound = inbound

    async def process(self, inbox_event: InboxEvent) -> None:
        """Process one event (safe to run again: every effect is idempotent)."""
        event = decode_inbox_event(inbox_event)
        if isinstance(event, MessageEvent):
            if event.event == KapsoEventName.MESSAGE_RECEIVED:
                if event.direction is MessageDirection.OUTBOUND:
                    logger.info("Ignoring an outbound message delivered as received")
                    return
                await self._inbound.handle(inbox_event, event)
                return
            await self._message_status(inbox_event, event)
        elif isinstance(event, ConversationEvent):
            await self._conversation(event)
        else:
            # Stored and acknowledged; nothing to do with an event we do not know.
            logger.info("Ignoring unknown webhook event %s", event.event)

    async def _message_status(self, inbox_event: InboxEvent, event: MessageEvent) -> None:
        status = _STATUS_BY_EVENT.get(event.event)
        if status is None:
            logger.info("Ignoring message event %s", event.event)
            return
        change = await self._advance(event, status)
        if (
            event.event == KapsoEventName.MESSAGE_SENT
            and change is None
            and event.origin is MessageOrigin.BUSINESS_APP
        ):
            await self._store_manual(event)
        elif change is not None and (
            (change.changed and change.previous_status not in ACCEPTED_OUTBOUND_STATUSES)
            or inbox_event.attempts > 1
        ):
            # This webhook settled the send (it was pending or unknown), or an earlier attempt
            # at it may have failed before storing: the copy may be missing (storing it is
            # idempotent). Otherwise the copy was stored with the status (`record_sent`).
            await self._store_settled_api_send(change.message)

    async def _advance(
        self, event: MessageEvent, status: OutboundStatus
    ) -> OutboundStatusChange | None:
        """Move our outbound message forward; None when the message is not one of ours."""
        if event.status is MessageStatus.FAILED or status is OutboundStatus.FAILED:
            status = OutboundStatus.FAILED
        error = event.errors[0] if event.errors else None
        error_code = str(error.code) if error and error.code is not None else None
        error_message = (error.message or error.title) if error else None
        ours = _uuid(event.callback_data)
        if ours is not None:
            # Our id, echoed back: settles even a send whose wamid we never learned.
            change = await self._outbound.advance_outbound_status(
                ours, status, wamid=event.wamid, error_code=error_code, error_message=error_message
            )
            if change is not None:
                return change
        if event.wamid is None:
            return None
        return await self._outbound.advance_outbound_status_by_wamid(
            event.wamid, status, error_code=error_code, error_message=error_message
        )

    async def _store_settled_api_send(self, message: OutboundMessage) -> None:
        """A send-API message whose request timed out is stored once Kapso says it went out
        (stored once per wamid: for a send that did not time out this changes nothing)."""
        if (
            message.purpose != PURPOSE_API
            or message.status not in ACCEPTED_OUTBOUND_STATUSES
            or message.conversation_id is None
            or message.wamid is None
            or message.content is None
        ):
            return
        await self._conversations.store_outbound(
            message.conversation_id,
            content=message.content,
            wamid=message.wamid,
            message_type=message.message_type,
            outbound_id=message.id,
            sender_user_id=message.user_id,
        )

    async def _store_manual(self, event: MessageEvent) -> None:
        """A person answered from Kapso's inbox: keep it in the conversation, marked manual."""
        if event.conversation_id is None:
            return
        conversation = await self._conversations.find(event.conversation_id)
        if conversation is None:
            logger.info("Manual message on a conversation we do not store; not kept")
            return
        await self._conversations.store_outbound(
            conversation.id,
            content=event.text or f"[{event.message_type.value}]",
            wamid=event.wamid,
            message_type=event.message_type.value,
            manual=True,
        )

    async def _conversation(self, event: ConversationEvent) -> None:
        if event.event not in (
            KapsoEventName.CONVERSATION_ENDED,
            KapsoEventName.CONVERSATION_INACTIVE,
        ):
            return
        conversation_id = event.conversation_id
        conversation = await self._conversations.find(conversation_id) if conversation_id else None
        if conversation is None:
            return
        kapso_status = "ended" if event.event == KapsoEventName.CONVERSATION_ENDED else "inactive"
        await self._conversations.mark_kapso_status(conversation, kapso_status)


def _uuid(value: str | None) -> UUID | None:
    if not value:
        return None
    try:
        return UUID(value)
    except ValueError:
        return None
