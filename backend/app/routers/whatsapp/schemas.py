"""Response and request bodies of the WhatsApp routes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from app.repositories.models import InboxEvent, InboxState


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
