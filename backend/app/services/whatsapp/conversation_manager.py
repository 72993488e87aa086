"""WhatsApp conversations and their messages in the tables shared with the web chat."""

from __future__ import annotations

from uuid import UUID

from app.core.clock import Clock, utc_now
from app.db.pool import Connection
from app.integrations.kapso.webhook_events import MessageEvent
from app.repositories.conversations import ConversationStore
from app.repositories.models import (
    Conversation,
    ConversationStatus,
    JsonObject,
    MessageAppendResult,
    MessageMetadata,
    MessageRole,
    NewMessage,
    WhatsAppConversationMetadata,
)
from app.services.whatsapp.auth import WhatsAppIdentity

CHANNEL = "whatsapp"
CREATED_VIA = "whatsapp_webhook"
TITLE = "Conversación de WhatsApp"


class WhatsAppConversationManager:
    """Finds or creates the conversation of a Kapso conversation id and stores its messages.

    Conversations are rows of the shared `conversations` table marked `channel: "whatsapp"`,
    with the seed's metadata (`created_via`, `user_id`, `company_id`, `phone_number`) plus the
    Kapso conversation id, the business number and when the user/company cache was resolved.
    """

    def __init__(self, store: ConversationStore, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def find(self, kapso_conversation_id: str) -> Conversation | None:
        return await self._store.find_conversation_by_kapso_id(kapso_conversation_id)

    async def previous_for_phone(
        self, phone: str, business_phone_number_id: str | None
    ) -> Conversation | None:
        """The newest conversation with this number, whose cache a new Kapso id can reuse."""
        return await self._store.find_latest_conversation_for_phone(
            phone, business_phone_number_id=business_phone_number_id
        )

    async def ensure(
        self,
        *,
        kapso_conversation_id: str,
        existing: Conversation | None,
        identity: WhatsAppIdentity,
        business_phone_number_id: str | None,
        contact_name: str | None,
    ) -> Conversation:
        """The conversation, created if new, with its user/company cache brought up to date."""
        if identity.user_id is None:
            raise ValueError("a conversation needs a user")
        now = self._clock()
        resolved_at = identity.resolved_at or now
        if existing is None:
            result = await self._store.get_or_create_conversation(
                kapso_conversation_id=kapso_conversation_id,
                user_id=identity.user_id,
                title=TITLE,
                metadata=WhatsAppConversationMetadata(
                    channel=CHANNEL,
                    created_via=CREATED_VIA,
                    user_id=identity.user_id,
                    company_id=identity.company_id,
                    resolved_at=resolved_at,
                    phone_number=identity.phone,
                    business_phone_number_id=business_phone_number_id,
                    contact_name=contact_name,
                    kapso_status="active",
                    last_inbound_at=now,
                ),
            )
            if result.created:
                return result.conversation
            existing = result.conversation
        if identity.from_cache:
            return existing
        # Freshly resolved: refresh the cache (a changed company or phone is picked up here).
        updated = await self._store.update_conversation(
            existing.id,
            metadata=WhatsAppConversationMetadata(
                user_id=identity.user_id,
                company_id=identity.company_id,
                resolved_at=resolved_at,
                phone_number=identity.phone,
            ),
        )
        return updated or existing

    async def store_inbound(
        self,
        conversation: Conversation,
        event: MessageEvent,
        user_id: UUID | None,
        *,
        tx: Connection | None = None,
    ) -> MessageAppendResult:
        """Store the user's message (once per wamid)."""
        return await self._store.append_message(
            self.inbound_message(conversation, event, user_id), tx=tx
        )

    @staticmethod
    def inbound_message(
        conversation: Conversation, event: MessageEvent, user_id: UUID | None
    ) -> NewMessage:
        """The conversation's row for the user's message."""
        media: JsonObject | None = None
        if event.media is not None:
            media = event.media.model_dump(mode="json", exclude_none=True)
        return NewMessage(
            conversation_id=conversation.id,
            role=MessageRole.USER,
            content=inbound_content(event),
            user_id=user_id,
            metadata=MessageMetadata(
                channel=CHANNEL,
                whatsapp_message_id=event.wamid,
                message_type=event.message_type.value,
                reply_to_wamid=event.context_wamid,
                media=media,
            ),
        )

    async def store_outbound(
        self,
        conversation_id: UUID,
        *,
        content: str,
        wamid: str | None,
        message_type: str = "text",
        outbound_id: UUID | None = None,
        sender_user_id: UUID | None = None,
        manual: bool | None = None,
        tx: Connection | None = None,
    ) -> MessageAppendResult:
        """Store a message we (or a person in Kapso's inbox) sent, as the assistant."""
        return await self._store.append_message(
            self.outbound_message(
                conversation_id,
                content=content,
                wamid=wamid,
                message_type=message_type,
                outbound_id=outbound_id,
                sender_user_id=sender_user_id,
                manual=manual,
            ),
            tx=tx,
        )

    @staticmethod
    def outbound_message(
        conversation_id: UUID,
        *,
        content: str,
        wamid: str | None,
        message_type: str = "text",
        outbound_id: UUID | None = None,
        sender_user_id: UUID | None = None,
        manual: bool | None = None,
    ) -> NewMessage:
        """The conversation's row for a message we (or a person in Kapso's inbox) sent."""
        return NewMessage(
            conversation_id=conversation_id,
            role=MessageRole.ASSISTANT,
            content=content,
            metadata=MessageMetadata(
                channel=CHANNEL,
                whatsapp_message_id=wamid,
                message_type=message_type,
                outbound_id=outbound_id,
                sender_user_id=sender_user_id,
                manual=manual,
            ),
        )

    async def mark_kapso_status(self, conversation: Conversation, kapso_status: str) -> None:
        """Record Kapso's view (ended, inactive); an ended one is completed in our table too."""
        status = ConversationStatus.COMPLETED if kapso_status == "ended" else None
        await self._store.update_conversation(
            conversation.id,
            metadata=WhatsAppConversationMetadata(kapso_status=kapso_status),
            status=status,
        )


def inbound_content(event: MessageEvent) -> str:
    """What the chat shows for an inbound message: its text, else a label of its kind."""
    if event.text:
        return event.text
    if event.media is not None and event.media.filename:
        return f"[{event.message_type.value}: {event.media.filename}]"
    return f"[{event.message_type.value}]"
