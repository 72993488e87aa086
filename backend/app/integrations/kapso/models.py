"""Typed models of what the Kapso client sends and what Kapso answers."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)


class KapsoModel(BaseModel):
    """Base of response models: immutable, and tolerant of fields Kapso adds later."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class RequestModel(BaseModel):
    """Base of request-side models: immutable, unknown fields are a mistake."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class MessageType(StrEnum):
    """WhatsApp message types the client can send."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    INTERACTIVE = "interactive"
    TEMPLATE = "template"
    REACTION = "reaction"


MEDIA_TYPES = frozenset(
    {
        MessageType.IMAGE,
        MessageType.VIDEO,
        MessageType.AUDIO,
        MessageType.DOCUMENT,
        MessageType.STICKER,
    }
)


# Pagination ---------------------------------------------------------------------------------
class Cursors(KapsoModel):
    before: str | None = None
    after: str | None = None


class Paging(KapsoModel):
    cursors: Cursors | None = None
    next: str | None = None
    previous: str | None = None


class CursorPage(KapsoModel, Generic[T]):
    """One page of a cursor-paginated list."""

    data: list[T] = Field(default_factory=list)
    paging: Paging | None = None

    @property
    def next_cursor(self) -> str | None:
        """The `after` cursor, only when Kapso says there is a next page."""
        if self.paging is None or self.paging.cursors is None:
            return None
        if self.paging.next is None:
            return None
        return self.paging.cursors.after


class OffsetMeta(KapsoModel):
    page: int = 1
    per_page: int = 20
    total_pages: int = 1
    total_count: int = 0


class OffsetPage(KapsoModel, Generic[T]):
    """One page of an offset-paginated list (phone numbers, some legacy lists)."""

    data: list[T] = Field(default_factory=list)
    meta: OffsetMeta | None = None


# Sends --------------------------------------------------------------------------------------
class SendContact(KapsoModel):
    input: str | None = None
    wa_id: str | None = None


class SentMessageRef(KapsoModel):
    id: str
    message_status: str | None = None


class SendResponse(KapsoModel):
    """Kapso's (Meta's) answer to a message send."""

    messaging_product: str = "whatsapp"
    contacts: list[SendContact] = Field(default_factory=list)
    messages: list[SentMessageRef] = Field(min_length=1)


class SendResult(KapsoModel):
    """What a send returns: the wamid, and to whom and from which number it went."""

    wamid: str
    phone_number_id: str
    to: str
    wa_id: str | None = None
    conversation_id: str | None = None
    callback_data: str | None = None
    message_status: str | None = None

    @property
    def message_id(self) -> str:
        """Alias of `wamid`, the name the seed's send responses use."""
        return self.wamid


class ReplyButton(RequestModel):
    id: str
    title: str


class ListRow(RequestModel):
    id: str
    title: str
    description: str | None = None


class ListSection(RequestModel):
    title: str | None = None
    rows: list[ListRow]


class ButtonsMessage(RequestModel):
    """Interactive message with 1–3 reply buttons."""

    kind: Literal["button"] = "button"
    body: str
    buttons: list[ReplyButton]
    header: str | None = None
    footer: str | None = None


class ListMessage(RequestModel):
    """Interactive list: a button that opens sections of rows (≤10 rows in total)."""

    kind: Literal["list"] = "list"
    body: str
    button_text: str
    sections: list[ListSection]
    header: str | None = None
    footer: str | None = None


class CtaUrlMessage(RequestModel):
    """Interactive call-to-action: one button that opens a URL."""

    kind: Literal["cta_url"] = "cta_url"
    body: str
    display_text: str
    url: str
    header: str | None = None
    footer: str | None = None


InteractiveMessage = ButtonsMessage | ListMessage | CtaUrlMessage


class TemplateMedia(RequestModel):
    """A media header parameter of a template (by link or uploaded id)."""

    type: Literal["image", "video", "document"]
    link: str | None = None
    id: str | None = None
    filename: str | None = None


class TemplateButtonParameter(RequestModel):
    """A parameter of a template button: a quick-reply payload or a dynamic URL suffix."""

    index: int = Field(ge=0, le=9)
    sub_type: Literal["quick_reply", "url", "copy_code"] = "quick_reply"
    value: str


class MarkReadResponse(KapsoModel):
    success: bool = False


# Media --------------------------------------------------------------------------------------
class MediaUploadResult(KapsoModel):
    id: str


class MediaInfo(KapsoModel):
    id: str
    mime_type: str | None = None
    sha256: str | None = None
    file_size: int | None = None
    url: str | None = None
    download_url: str | None = None
    download_url_expires_at: datetime | None = None


class DeleteResult(KapsoModel):
    success: bool = True


# Conversations ------------------------------------------------------------------------------
class ConversationKapso(KapsoModel):
    contact_name: str | None = None
    messages_count: int | None = None
    last_message_id: str | None = None
    last_message_type: str | None = None
    last_message_timestamp: datetime | None = None
    last_message_text: str | None = None
    last_inbound_at: datetime | None = None
    last_outbound_at: datetime | None = None


class Conversation(KapsoModel):
    """A Kapso WhatsApp conversation."""

    id: str
    phone_number: str | None = None
    phone_number_id: str | None = None
    status: str | None = None
    last_active_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    whatsapp_config_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    kapso: ConversationKapso | None = None

    @property
    def contact_name(self) -> str | None:
        return self.kapso.contact_name if self.kapso else None

    @property
    def last_inbound_at(self) -> datetime | None:
        return self.kapso.last_inbound_at if self.kapso else None

    def window_open(self, now: datetime) -> bool | None:
        """Whether free-form messages may be sent; None when Kapso did not say."""
        last = self.last_inbound_at
        if last is None:
            return None
        return now - last < CUSTOMER_SERVICE_WINDOW


ConversationStatus = Literal["active", "ended"]


# Contacts -----------------------------------------------------------------------------------
class Contact(KapsoModel):
    id: str
    wa_id: str | None = None
    profile_name: str | None = None
    display_name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ContactNote(KapsoModel):
    id: str
    name: str | None = None
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# Messages (history) -------------------------------------------------------------------------
class MessageMediaData(KapsoModel):
    url: str | None = None
    filename: str | None = None
    content_type: str | None = None
    byte_size: int | None = None


class MessageKapso(KapsoModel):
    direction: str | None = None
    status: str | None = None
    processing_status: str | None = None
    origin: str | None = None
    phone_number: str | None = None
    has_media: bool | None = None
    whatsapp_conversation_id: str | None = None
    contact_name: str | None = None
    content: str | None = None
    media_url: str | None = None
    media_data: MessageMediaData | None = None


class MessageRecord(KapsoModel):
    """A message from Kapso's history: Meta-shaped, plus the `kapso` extension."""

    id: str
    timestamp: str | None = None
    type: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    kapso: MessageKapso | None = None

    @property
    def content(self) -> str | None:
        return self.kapso.content if self.kapso else None


# Templates ----------------------------------------------------------------------------------
class Template(KapsoModel):
    id: str | None = None
    name: str
    language: str | None = None
    status: str | None = None
    category: str | None = None
    parameter_format: str | None = None
    components: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def is_approved(self) -> bool:
        return (self.status or "").upper() == "APPROVED"


class TemplateCreateResult(KapsoModel):
    id: str
    status: str | None = None
    category: str | None = None


# Phone numbers ------------------------------------------------------------------------------
class PhoneNumber(KapsoModel):
    """A business phone number connected to Kapso (a "WhatsApp config")."""

    phone_number_id: str | None = None
    id: str | None = None
    business_account_id: str | None = None
    display_phone_number: str | None = None
    verified_name: str | None = None
    quality_rating: str | None = None
    status: str | None = None
    throughput_tier: str | None = None


class DataEnvelope(KapsoModel, Generic[T]):
    """Platform and legacy APIs wrap single records in `{"data": ...}`."""

    data: T
