"""Response and request bodies of the WhatsApp routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, Field

from app.repositories.models import Conversation, InboxEvent, InboxState, Message

# Past this an offset is no page anyone reads; past 2**63 the stores cannot even hold it.
MAX_OFFSET = 2**31 - 1
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_signature"])
    message: str = Field(examples=["Missing or invalid X-Webhook-Signature"])
    field: str | None = Field(default=None, examples=["content"])


class ErrorResponse(BaseModel):
    """Every error of this API has this shape."""

    error: ErrorDetail


class WebhookAck(BaseModel):
    """What a webhook delivery produced: events recorded now, and duplicates of earlier ones."""

    received: int = Field(description="Events in the delivery (a batch has several).")
    accepted: int = Field(description="Events recorded now, to be processed.")
    duplicates: int = Field(description="Events already recorded by an earlier delivery.")


def webhook_ack_json(received: int, accepted: int, duplicates: int) -> bytes:
    """`WebhookAck`'s JSON exactly as FastAPI renders it, without building and dumping a model.

    The webhook answers thousands of deliveries a second; three integers need no validation.
    """
    return b'{"received":%d,"accepted":%d,"duplicates":%d}' % (received, accepted, duplicates)


class InboxEventView(BaseModel):
    """An inbox event as an operator sees it (no payload: it holds message text)."""

    id: UUID
    event: str
    state: InboxState
    attempts: int
    wamid: str | None
    conversation_key: str | None
    last_error: str | None
    received_at: datetime
    next_attempt_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_event(cls, event: InboxEvent) -> InboxEventView:
        return cls(
            id=event.id,
            event=event.event,
            state=event.state,
            attempts=event.attempts,
            wamid=event.wamid,
            conversation_key=event.conversation_key,
            last_error=event.last_error,
            received_at=event.received_at,
            next_attempt_at=event.next_attempt_at,
            completed_at=event.completed_at,
        )


class InboxEventList(BaseModel):
    data: list[InboxEventView]


def error_example(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_responses(**cases: tuple[int, str, str, str | None]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses`, one named example per case: name=(status, code, message, field)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for name, (status, code, message, field) in cases.items():
        entry = responses.setdefault(
            status, {"model": ErrorResponse, "content": {"application/json": {"examples": {}}}}
        )
        entry["content"]["application/json"]["examples"][name] = {
            "value": error_example(code, message, field)
        }
    return responses


AUTH_ERRORS = {
    "missing_token": (401, "missing_token", "A bearer token is required.", None),
    "expired_token": (401, "expired_token", "The token has expired.", None),
}
SEND_ERRORS = {
    **AUTH_ERRORS,
    "not_found": (404, "conversation_not_found", "No such conversation or recipient", None),
    "window_closed": (
        409,
        "outside_customer_service_window",
        "The 24-hour customer-service window is closed: only a template can be sent "
        "(POST /api/whatsapp/send/template).",
        None,
    ),
    "key_reused": (
        409,
        "idempotency_key_reused",
        "This Idempotency-Key was used for a different request",
        None,
    ),
    "too_long": (
        422,
        "validation_error",
        "String should have at most 4096 characters",
        "content",
    ),
    "rate_limited": (
        429,
        "rate_limited",
        "Too many sends: at most 30 per 60 seconds",
        None,
    ),
    "kapso_credentials": (
        502,
        "upstream_error",
        "Kapso refused our credentials or account (check KAPSO_API_KEY and the Kapso project)",
        None,
    ),
    "kapso_rate_limited": (
        503,
        "upstream_rate_limited",
        "Kapso is rate limiting our sends: Rate limit exceeded",
        None,
    ),
    "kapso_timeout": (
        504,
        "upstream_timeout",
        "Kapso did not confirm the send in time; it may still be delivered.",
        None,
    ),
}


class ConversationView(BaseModel):
    """A WhatsApp conversation as the web inbox lists it."""

    id: UUID = Field(description="Our conversation id (shared with the web chat).")
    conversation_id: str | None = Field(description="Kapso's id: use it in conversation_selector.")
    phone_number: str | None
    contact_name: str | None
    company_id: UUID | None
    status: str
    kapso_status: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_conversation(cls, conversation: Conversation) -> ConversationView:
        metadata = conversation.metadata
        return cls(
            id=conversation.id,
            conversation_id=metadata.kapso_conversation_id,
            phone_number=metadata.phone_number,
            contact_name=metadata.contact_name,
            company_id=metadata.company_id,
            status=conversation.status.value,
            kapso_status=metadata.kapso_status,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
        )


class ConversationList(BaseModel):
    data: list[ConversationView]
    limit: int
    offset: int


class MessageView(BaseModel):
    id: UUID
    role: str
    content: str
    message_id: str | None = Field(description="The WhatsApp message id (wamid).")
    message_type: str | None
    manual: bool = Field(description="Typed by a person in Kapso's inbox.")
    created_at: datetime

    @classmethod
    def from_message(cls, message: Message) -> MessageView:
        return cls(
            id=message.id,
            role=message.role.value,
            content=message.content,
            message_id=message.metadata.whatsapp_message_id,
            message_type=message.metadata.message_type,
            manual=bool(message.metadata.manual),
            created_at=message.created_at,
        )


class MessageList(BaseModel):
    conversation: ConversationView
    data: list[MessageView]
    limit: int
    offset: int
