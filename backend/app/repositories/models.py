"""The records the WhatsApp repository returns and accepts, the same for every backend."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.core.phone import try_normalize_phone

JsonObject = dict[str, JsonValue]


class _Record(BaseModel):
    """A row read from the store; extra columns (hosted tables have more) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Profile(_Record):
    id: UUID
    phone: str | None = None
    phone_e164: str | None = None
    full_name: str | None = None
    email: str | None = None
    phone_verified: bool = False
    created_at: datetime


class Company(_Record):
    id: UUID
    rut: str | None = None
    business_name: str | None = None
    trade_name: str | None = None
    created_at: datetime


class UserSession(_Record):
    """A user working in a company; the newest active one is the user's active company."""

    id: UUID
    user_id: UUID
    company_id: UUID
    is_active: bool
    last_accessed_at: datetime | None = None
    created_at: datetime


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    COMPLETED = "completed"


class WhatsAppConversationMetadata(BaseModel):
    """The metadata of a WhatsApp conversation (shared `conversations` table).

    Also the patch type of `update_conversation`: only the fields set explicitly are written,
    so `WhatsAppConversationMetadata(company_id=c, resolved_at=now)` updates just those keys.
    Unknown keys written by others are kept (extra="allow").
    """

    model_config = ConfigDict(extra="allow")

    channel: str | None = None
    created_via: str | None = None
    kapso_conversation_id: str | None = None
    # The seed's cache: who this number is, so a known conversation needs no profile lookup.
    user_id: UUID | None = None
    company_id: UUID | None = None
    # When user_id/company_id were last resolved from profiles and sessions (cache freshness).
    resolved_at: datetime | None = None
    phone_number: str | None = Field(default=None, description="The contact's number, E.164.")
    business_phone_number_id: str | None = None
    contact_name: str | None = None
    # Kapso's view of the conversation (active, ended, inactive...).
    kapso_status: str | None = None
    last_inbound_at: datetime | None = None

    def creation_json(self) -> JsonObject:
        """The metadata of a new conversation: every field that has a value."""
        return self._with_e164(self.model_dump(mode="json", exclude_none=True))

    def patch_json(self) -> JsonObject:
        """The keys to merge into existing metadata: only the fields set explicitly."""
        return self._with_e164(self.model_dump(mode="json", exclude_unset=True))

    def _with_e164(self, data: JsonObject) -> JsonObject:
        # Stored normalised, so "latest conversation of this number" matches any format.
        if self.phone_number:
            data["phone_number"] = try_normalize_phone(self.phone_number) or self.phone_number
        return data


class Conversation(_Record):
    id: UUID
    user_id: UUID
    title: str
    status: ConversationStatus
    metadata: WhatsAppConversationMetadata
    created_at: datetime
    updated_at: datetime


class ConversationResult(_Record):
    """A conversation and whether this call created it."""

    conversation: Conversation
    created: bool


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageMetadata(BaseModel):
    """Metadata of a stored message; WhatsApp messages carry channel and wamid."""

    model_config = ConfigDict(extra="allow")

    channel: str | None = None
    whatsapp_message_id: str | None = None
    message_type: str | None = None
    # A person typed it in Kapso's inbox (`whatsapp.message.sent`, origin business_app).
    manual: bool | None = None
    sender_user_id: UUID | None = None
    outbound_id: UUID | None = None
    reply_to_wamid: str | None = None
    media: JsonObject | None = None


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: UUID
    role: MessageRole
    content: str
    metadata: MessageMetadata = Field(default_factory=MessageMetadata)
    user_id: UUID | None = None


class Message(_Record):
    id: UUID
    conversation_id: UUID
    user_id: UUID | None = None
    role: MessageRole
    content: str
    metadata: MessageMetadata
    created_at: datetime


class MessageAppendResult(_Record):
    """The stored message and whether this call stored it (False: its wamid was there)."""

    message: Message
    created: bool


class InboxState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"


class NewInboxEvent(BaseModel):
    """One webhook event to record."""

    model_config = ConfigDict(extra="forbid")

    # Unique per event: Kapso's X-Idempotency-Key, plus the index inside a batch.
    idempotency_key: str = Field(min_length=1)
    event: str = Field(min_length=1)
    wamid: str | None = None
    # Events with the same key are processed one at a time, in arrival order.
    conversation_key: str | None = None
    payload: JsonObject


class InboxRecordResult(_Record):
    event_id: UUID
    idempotency_key: str
    is_new: bool


class InboxEvent(_Record):
    id: UUID
    seq: int
    idempotency_key: str
    event: str
    wamid: str | None = None
    conversation_key: str | None = None
    payload: JsonObject
    state: InboxState
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    received_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    # Filled by claims: the stored WhatsApp conversation whose Kapso id is the conversation
    # key, so the worker needs no lookup of its own (None: there is none yet).
    conversation: Conversation | None = None


class OutboundStatus(StrEnum):
    """Forward-only: pending → unknown/sent → delivered → read; failed is final."""

    PENDING = "pending"
    UNKNOWN = "unknown"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


# Kapso took the message: it went out (later statuses only say how far it got).
ACCEPTED_OUTBOUND_STATUSES = frozenset(
    {OutboundStatus.SENT, OutboundStatus.DELIVERED, OutboundStatus.READ}
)


class NewOutboundMessage(BaseModel):
    """An outbound message, recorded before it is sent."""

    model_config = ConfigDict(extra="forbid")

    to_phone: str
    message_type: str
    # reply | registration | no_company | api | notification ...
    purpose: str
    conversation_id: UUID | None = None
    kapso_conversation_id: str | None = None
    company_id: UUID | None = None
    # The web app user who asked for it; None for the service itself.
    user_id: UUID | None = None
    business_phone_number_id: str | None = None
    inbox_event_id: UUID | None = None
    wamid: str | None = None
    status: OutboundStatus = OutboundStatus.PENDING
    error_code: str | None = None
    error_message: str | None = None
    # Unique per user (None = the service): the same key is the same message, sent once.
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    # The text sent (or its caption/summary), to recognise it in Kapso's history.
    content: str | None = None


class OutboundMessage(_Record):
    id: UUID
    wamid: str | None = None
    conversation_id: UUID | None = None
    kapso_conversation_id: str | None = None
    company_id: UUID | None = None
    user_id: UUID | None = None
    to_phone: str
    business_phone_number_id: str | None = None
    message_type: str
    purpose: str
    inbox_event_id: UUID | None = None
    status: OutboundStatus
    error_code: str | None = None
    error_message: str | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    content: str | None = None
    # Attempts to call Kapso: > 0 means a send may have left, even if the status is pending.
    send_attempts: int = 0
    last_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class OutboundRecordResult(_Record):
    """The outbound row and whether this call created it (False: the key or wamid existed)."""

    message: OutboundMessage
    created: bool


class OutboundStatusChange(_Record):
    """The outbound row after a status update; changed is False for a stale or equal status."""

    message: OutboundMessage
    changed: bool
    # The status before this update (None from a store that did not say).
    previous_status: OutboundStatus | None = None


_OUTBOUND_RANK = {
    OutboundStatus.PENDING: 0,
    OutboundStatus.UNKNOWN: 1,
    OutboundStatus.SENT: 2,
    OutboundStatus.DELIVERED: 3,
    OutboundStatus.READ: 4,
}


def outbound_status_allowed(old: OutboundStatus, new: OutboundStatus) -> bool:
    """The forward-only rule; mirrors public.whatsapp_outbound_status_allowed in SQL."""
    if old is new:
        return True
    if old is OutboundStatus.FAILED:
        return False
    if new is OutboundStatus.FAILED:
        return old in (OutboundStatus.PENDING, OutboundStatus.UNKNOWN, OutboundStatus.SENT)
    return _OUTBOUND_RANK[new] > _OUTBOUND_RANK[old]
