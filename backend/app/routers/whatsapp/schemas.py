"""Response and request bodies of the WhatsApp routes."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
