"""Typed models of the webhooks Kapso delivers, and the normalised events the service consumes.

Two layers live here. The *payload* models mirror Kapso's bodies (version 2 and the legacy
version 1) and tolerate fields Kapso adds later. The *event* models (`MessageEvent`,
`ConversationEvent`, `UnknownEvent`) are what the rest of the service works with: one flat,
version-independent shape per delivery item, built by `app.integrations.kapso.api.webhooks`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

PayloadVersion: TypeAlias = Literal["v1", "v2"]


# Enums ------------------------------------------------------------------------------------------
class _TolerantStrEnum(StrEnum):
    """A `StrEnum` whose unknown values become `UNKNOWN` instead of failing validation.

    Kapso and Meta add message types and statuses over time; a new value must not make a
    whole delivery unreadable (the pywa habit). Subclasses must define `UNKNOWN = "unknown"`.
    """

    @classmethod
    def _missing_(cls, value: object) -> _TolerantStrEnum:
        if isinstance(value, str):
            folded = value.strip().lower()
            for member in cls:
                if member.value == folded:
                    return member
        return cls("unknown")


class WebhookMessageType(_TolerantStrEnum):
    """WhatsApp message types as they appear in received and sent message payloads."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    INTERACTIVE = "interactive"
    BUTTON = "button"
    LOCATION = "location"
    CONTACTS = "contacts"
    REACTION = "reaction"
    TEMPLATE = "template"
    ORDER = "order"
    SYSTEM = "system"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


MEDIA_MESSAGE_TYPES = frozenset(
    {
        WebhookMessageType.IMAGE,
        WebhookMessageType.VIDEO,
        WebhookMessageType.AUDIO,
        WebhookMessageType.DOCUMENT,
        WebhookMessageType.STICKER,
    }
)


class MessageDirection(_TolerantStrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    UNKNOWN = "unknown"


class MessageStatus(_TolerantStrEnum):
    """Kapso's message status (`received` for inbound, Meta's delivery states for outbound)."""

    PENDING = "pending"
    RECEIVED = "received"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    DELETED = "deleted"
    UNKNOWN = "unknown"


class MessageOrigin(_TolerantStrEnum):
    """Where Kapso saw the message come from (the business app means a human sent it by phone)."""

    CLOUD_API = "cloud_api"
    BUSINESS_APP = "business_app"
    HISTORY_SYNC = "history_sync"
    UNKNOWN = "unknown"


class WebhookConversationStatus(_TolerantStrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    UNKNOWN = "unknown"


class KapsoEventName(StrEnum):
    """Event names Kapso puts in `X-Webhook-Event`; compare `event.event` against these."""

    MESSAGE_RECEIVED = "whatsapp.message.received"
    MESSAGE_SENT = "whatsapp.message.sent"
    MESSAGE_DELIVERED = "whatsapp.message.delivered"
    MESSAGE_READ = "whatsapp.message.read"
    MESSAGE_FAILED = "whatsapp.message.failed"
    CONVERSATION_CREATED = "whatsapp.conversation.created"
    CONVERSATION_ENDED = "whatsapp.conversation.ended"
    CONVERSATION_INACTIVE = "whatsapp.conversation.inactive"


MESSAGE_EVENT_NAMES = frozenset(
    {
        KapsoEventName.MESSAGE_RECEIVED,
        KapsoEventName.MESSAGE_SENT,
        KapsoEventName.MESSAGE_DELIVERED,
        KapsoEventName.MESSAGE_READ,
        KapsoEventName.MESSAGE_FAILED,
    }
)
CONVERSATION_EVENT_NAMES = frozenset(
    {
        KapsoEventName.CONVERSATION_CREATED,
        KapsoEventName.CONVERSATION_ENDED,
        KapsoEventName.CONVERSATION_INACTIVE,
    }
)


# Lenient scalar types ---------------------------------------------------------------------------
def _starts_like_iso_date(text: str) -> bool:
    """`YYYY-…`: text `float()` cannot read, so the ISO parse may go first.

    A `-` after four digits is never part of a number (only a leading sign or an exponent's
    sign are), so skipping `float()` here changes no result; it only saves the exception most
    deliveries paid for each of their ISO timestamps.
    """
    return text[4:5] == "-" and text[:4].isdigit()


def to_aware_datetime(value: object) -> datetime | None:
    """Unix seconds (number or digit string) or ISO-8601 text → aware UTC datetime; else None.

    A timestamp Kapso formats differently must not reject the delivery: it only loses the time.
    """
    if isinstance(value, str):
        return _datetime_from_text(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return None


# A delivery repeats its timestamps (a conversation's created/updated/last-active times are
# often one instant) and deliveries of the same second share them; datetimes are immutable.
@functools.lru_cache(maxsize=1024)
def _datetime_from_text(value: str) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    try:
        if not _starts_like_iso_date(text):
            try:
                return datetime.fromtimestamp(float(text), tz=UTC)
            except ValueError:
                pass
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


LenientDatetime = Annotated[datetime | None, BeforeValidator(to_aware_datetime)]


def _to_optional_int(value: object) -> object:
    """Counts sometimes arrive as strings; unreadable ones become None rather than errors."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


LenientInt = Annotated[int | None, BeforeValidator(_to_optional_int)]


def _null_as_empty_tuple(value: object) -> object:
    # Optional arrays may come as `null` rather than being left out; both mean "none".
    return () if value is None else value


def _null_as_empty_dict(value: object) -> object:
    return {} if value is None else value


def _null_as_false(value: object) -> object:
    return False if value is None else value


FlagDefaultFalse = Annotated[bool, BeforeValidator(_null_as_false)]
JsonObject = Annotated[dict[str, JsonValue], BeforeValidator(_null_as_empty_dict)]


# Payload models (Kapso's shapes) ----------------------------------------------------------------
class KapsoPayloadModel(BaseModel):
    """Base of payload models: immutable, tolerant of new fields, ids given as numbers accepted."""

    model_config = ConfigDict(
        frozen=True, extra="allow", populate_by_name=True, coerce_numbers_to_str=True
    )


class TextContent(KapsoPayloadModel):
    body: str | None = None


class MediaContent(KapsoPayloadModel):
    """`image`, `video`, `audio`, `document` or `sticker` content of a message."""

    id: str | None = None
    link: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None
    animated: bool | None = None


class ButtonReply(KapsoPayloadModel):
    id: str | None = None
    title: str | None = None


class ListReply(KapsoPayloadModel):
    id: str | None = None
    title: str | None = None
    description: str | None = None


class InteractiveContent(KapsoPayloadModel):
    type: str | None = None
    button_reply: ButtonReply | None = None
    list_reply: ListReply | None = None


class TemplateButtonContent(KapsoPayloadModel):
    """A tap on a template's quick-reply button (message type `button`)."""

    payload: str | None = None
    text: str | None = None


class MessageContext(KapsoPayloadModel):
    """What the message replies to or was forwarded from."""

    id: str | None = None
    from_: str | None = Field(default=None, alias="from")
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None


class LocationContent(KapsoPayloadModel):
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class SharedContactName(KapsoPayloadModel):
    formatted_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class SharedContactPhone(KapsoPayloadModel):
    phone: str | None = None
    wa_id: str | None = None
    type: str | None = None


class SharedContact(KapsoPayloadModel):
    """One contact card of a `contacts` message."""

    name: SharedContactName | None = None
    phones: Annotated[tuple[SharedContactPhone, ...], BeforeValidator(_null_as_empty_tuple)] = ()


class ReactionContent(KapsoPayloadModel):
    message_id: str | None = None
    emoji: str | None = None


class MediaData(KapsoPayloadModel):
    """Kapso's copy of a message's media (downloadable without Meta credentials)."""

    url: str | None = None
    filename: str | None = None
    content_type: str | None = None
    byte_size: LenientInt = None


class Transcript(KapsoPayloadModel):
    text: str | None = None


class StatusError(KapsoPayloadModel):
    """One of Meta's errors on a failed status (e.g. 131047: outside the 24-hour window)."""

    code: LenientInt = None
    title: str | None = None
    message: str | None = None


class MetaStatus(KapsoPayloadModel):
    """Meta's raw status object, as Kapso forwards it in `kapso.statuses[]`."""

    id: str | None = None
    status: MessageStatus | None = None
    timestamp: LenientDatetime = None
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: Annotated[tuple[StatusError, ...], BeforeValidator(_null_as_empty_tuple)] = ()


class KapsoMessageExtension(KapsoPayloadModel):
    """The `kapso` object Kapso adds to each Meta-shaped message."""

    # Not documented for webhooks; read when present so the Kapso id can be recorded.
    id: str | None = None
    direction: MessageDirection | None = None
    status: MessageStatus | None = None
    processing_status: str | None = None
    origin: MessageOrigin | None = None
    has_media: bool | None = None
    content: str | None = None
    media_url: str | None = None
    media_data: MediaData | None = None
    transcript: Transcript | None = None
    contact_name: str | None = None
    statuses: Annotated[tuple[MetaStatus, ...], BeforeValidator(_null_as_empty_tuple)] = ()


class WebhookMessage(KapsoPayloadModel):
    """A version-2 message: Meta's message object plus the `kapso` extension."""

    id: str | None = None
    timestamp: LenientDatetime = None
    type: WebhookMessageType = WebhookMessageType.UNKNOWN
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    text: TextContent | None = None
    image: MediaContent | None = None
    video: MediaContent | None = None
    audio: MediaContent | None = None
    document: MediaContent | None = None
    sticker: MediaContent | None = None
    interactive: InteractiveContent | None = None
    button: TemplateButtonContent | None = None
    context: MessageContext | None = None
    location: LocationContent | None = None
    contacts: Annotated[tuple[SharedContact, ...], BeforeValidator(_null_as_empty_tuple)] = ()
    reaction: ReactionContent | None = None
    kapso: KapsoMessageExtension | None = None

    @property
    def media(self) -> MediaContent | None:
        """The media object of whichever media type the message carries."""
        for candidate in (self.image, self.video, self.audio, self.document, self.sticker):
            if candidate is not None:
                return candidate
        return None


def _message_or_none(value: object) -> object:
    # `since_message` is not specified beyond "a message"; anything else is ignored, not fatal.
    return value if isinstance(value, dict) else None


class WebhookConversationKapso(KapsoPayloadModel):
    contact_name: str | None = None
    messages_count: LenientInt = None
    last_message_type: str | None = None
    last_inbound_at: LenientDatetime = None
    last_outbound_at: LenientDatetime = None


class WebhookConversation(KapsoPayloadModel):
    """The conversation record carried by message and conversation events (both versions)."""

    id: str | None = None
    phone_number: str | None = None
    phone_number_id: str | None = None
    status: WebhookConversationStatus | None = None
    last_active_at: LenientDatetime = None
    created_at: LenientDatetime = None
    updated_at: LenientDatetime = None
    metadata: JsonObject = Field(default_factory=dict)
    kapso: WebhookConversationKapso | None = None
    # Version 1 keeps these at the top level of the conversation.
    contact_name: str | None = None
    whatsapp_config_id: str | None = None

    @property
    def display_name(self) -> str | None:
        """The contact's name as Kapso knows it, from either payload version."""
        if self.kapso is not None and self.kapso.contact_name:
            return self.kapso.contact_name
        return self.contact_name


class MessagePayloadV2(KapsoPayloadModel):
    message: WebhookMessage
    conversation: WebhookConversation | None = None
    is_new_conversation: FlagDefaultFalse = False
    phone_number_id: str | None = None


class V1Message(KapsoPayloadModel):
    """A legacy (version 1) message: Kapso's own record rather than Meta's shape."""

    id: str | None = None
    whatsapp_message_id: str | None = None
    message_type: WebhookMessageType = WebhookMessageType.UNKNOWN
    content: str | None = None
    direction: MessageDirection | None = None
    status: MessageStatus | None = None
    origin: MessageOrigin | None = None
    phone_number: str | None = None
    has_media: bool | None = None
    media_url: str | None = None
    created_at: LenientDatetime = None


class WhatsAppConfig(KapsoPayloadModel):
    """Version 1's name for a business phone number."""

    id: str | None = None
    display_phone_number: str | None = None
    phone_number_id: str | None = None


class MessagePayloadV1(KapsoPayloadModel):
    message: V1Message
    conversation: WebhookConversation | None = None
    whatsapp_config: WhatsAppConfig | None = None
    whatsapp_config_id: str | None = None
    is_new_conversation: FlagDefaultFalse = False
    phone_number_id: str | None = None


class Inactivity(KapsoPayloadModel):
    minutes: LenientInt = None


class ConversationPayload(KapsoPayloadModel):
    conversation: WebhookConversation
    phone_number_id: str | None = None
    inactivity: Inactivity | None = None
    since_message: Annotated[WebhookMessage | None, BeforeValidator(_message_or_none)] = None


# Normalised events (what the service consumes) --------------------------------------------------
class EventModel(BaseModel):
    """Base of normalised events: immutable; built by the parser, never from user input."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventMedia(EventModel):
    """A message's media, merged from Meta's object and Kapso's downloadable copy."""

    id: str | None = None
    url: str | None = None
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None
    sha256: str | None = None
    byte_size: int | None = None


class ReplySelection(EventModel):
    """What the user picked: a reply button, a list row, or a template quick-reply button."""

    kind: Literal["button_reply", "list_reply", "button"]
    id: str | None = None
    title: str | None = None
    description: str | None = None


def _stable_hash(raw: dict[str, Any]) -> str:
    """A short digest of a payload, for identities when the payload carries no id of its own."""
    try:
        encoded = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        encoded = repr(raw).encode("utf-8", "backslashreplace")
    return hashlib.sha256(encoded).hexdigest()[:32]


def _join_key(parts: Iterable[str | None]) -> str:
    return "|".join(part or "" for part in parts)


class MessageEvent(EventModel):
    """A message received or sent, or a status change of a sent message."""

    kind: Literal["message"] = "message"
    event: str
    payload_version: PayloadVersion
    wamid: str | None = None
    kapso_message_id: str | None = None
    conversation_id: str | None = None
    conversation: WebhookConversation | None = None
    phone_number_id: str | None = None
    sender_phone: str | None = None
    recipient_phone: str | None = None
    contact_name: str | None = None
    direction: MessageDirection = MessageDirection.UNKNOWN
    origin: MessageOrigin | None = None
    message_type: WebhookMessageType = WebhookMessageType.UNKNOWN
    text: str | None = None
    media: EventMedia | None = None
    reply: ReplySelection | None = None
    context_wamid: str | None = None
    location: LocationContent | None = None
    contacts: tuple[SharedContact, ...] = ()
    reaction: ReactionContent | None = None
    transcript: str | None = None
    timestamp: datetime | None = None
    is_new_conversation: bool = False
    status: MessageStatus | None = None
    processing_status: str | None = None
    errors: tuple[StatusError, ...] = ()
    callback_data: str | None = None
    raw: dict[str, Any] = Field(repr=False)

    @property
    def contact_phone(self) -> str | None:
        """The customer's number: the sender of inbound messages, the recipient of outbound ones."""
        conversation_phone = self.conversation.phone_number if self.conversation else None
        if self.direction is MessageDirection.OUTBOUND:
            return conversation_phone or self.recipient_phone
        return conversation_phone or self.sender_phone

    @property
    def error_codes(self) -> tuple[int, ...]:
        return tuple(error.code for error in self.errors if error.code is not None)

    @property
    def dedup_key(self) -> str:
        """Identity for de-duplication: event name + wamid (one wamid has several status events).

        Kapso retries deliveries and may re-send a failing batch item by item with new
        idempotency keys, so the wamid, not the `X-Idempotency-Key`, is what identifies it.
        """
        message_id = self.wamid or self.kapso_message_id or f"sha256:{_stable_hash(self.raw)}"
        return _join_key((self.event, message_id))


class ConversationEvent(EventModel):
    """A conversation was created, ended or went inactive."""

    kind: Literal["conversation"] = "conversation"
    event: str
    payload_version: PayloadVersion
    conversation: WebhookConversation
    phone_number_id: str | None = None
    inactivity_minutes: int | None = None
    since_message: WebhookMessage | None = None
    raw: dict[str, Any] = Field(repr=False)

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id

    @property
    def contact_name(self) -> str | None:
        return self.conversation.display_name

    @property
    def dedup_key(self) -> str:
        """Identity for de-duplication: conversation, event, status and when it changed.

        `updated_at` and the inactive event's `since_message` keep a conversation that is
        ended, reopened and ended again from being mistaken for a retry of the first end.
        """
        conversation = self.conversation
        changed_at = conversation.updated_at or conversation.last_active_at
        return _join_key(
            (
                self.event,
                conversation.id or f"sha256:{_stable_hash(self.raw)}",
                conversation.status.value if conversation.status else None,
                changed_at.isoformat() if changed_at else None,
                self.since_message.id if self.since_message else None,
            )
        )


class UnknownEvent(EventModel):
    """An event this service does not model (contact events, new Kapso events, no event name)."""

    kind: Literal["unknown"] = "unknown"
    event: str | None = None
    payload_version: PayloadVersion | None = None
    raw: dict[str, Any] = Field(repr=False)

    @property
    def dedup_key(self) -> str:
        """Identity for de-duplication: event name + a digest of the body."""
        return _join_key((self.event, f"sha256:{_stable_hash(self.raw)}"))


WebhookEvent: TypeAlias = MessageEvent | ConversationEvent | UnknownEvent


__all__ = [
    "CONVERSATION_EVENT_NAMES",
    "MEDIA_MESSAGE_TYPES",
    "MESSAGE_EVENT_NAMES",
    "ButtonReply",
    "ConversationEvent",
    "ConversationPayload",
    "EventMedia",
    "Inactivity",
    "InteractiveContent",
    "KapsoEventName",
    "KapsoMessageExtension",
    "ListReply",
    "LocationContent",
    "MediaContent",
    "MediaData",
    "MessageContext",
    "MessageDirection",
    "MessageEvent",
    "MessageOrigin",
    "MessagePayloadV1",
    "MessagePayloadV2",
    "MessageStatus",
    "MetaStatus",
    "PayloadVersion",
    "ReactionContent",
    "ReplySelection",
    "SharedContact",
    "SharedContactName",
    "SharedContactPhone",
    "StatusError",
    "TemplateButtonContent",
    "TextContent",
    "Transcript",
    "UnknownEvent",
    "V1Message",
    "WebhookConversation",
    "WebhookConversationKapso",
    "WebhookConversationStatus",
    "WebhookEvent",
    "WebhookMessage",
    "WebhookMessageType",
    "WhatsAppConfig",
    "to_aware_datetime",
]
