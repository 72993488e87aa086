"""The records the emulator keeps: what Kapso would have in its database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class TemplateStatus(StrEnum):
    APPROVED = "APPROVED"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    PAUSED = "PAUSED"
    IN_APPEAL = "IN_APPEAL"
    DISABLED = "DISABLED"


class Record(BaseModel):
    """Base of every stored record: `seq` orders records and backs pagination cursors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seq: int


class StatusChange(BaseModel):
    """One of Meta's raw status objects, as echoed in `kapso.statuses[]`."""

    model_config = ConfigDict(extra="forbid")

    status: str
    timestamp: datetime
    errors: list[dict[str, Any]] | None = None


class Message(Record):
    id: str
    kapso_id: str
    direction: Direction
    type: str
    phone_number_id: str
    # The user's number in digits (Meta's `from` on inbound, `to` on outbound).
    user_wa_id: str
    conversation_id: str
    timestamp: datetime
    # The Meta type object (`text`, `image`, `interactive`, ...), as sent or received.
    body: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] | None = None
    status: str
    statuses: list[StatusChange] = Field(default_factory=list)
    origin: str = "cloud_api"
    biz_opaque_callback_data: str | None = None
    contact_name: str | None = None
    media_id: str | None = None
    content: str = ""
    processing_status: str | None = None


class Conversation(Record):
    id: str
    phone_number: str
    phone_number_id: str
    status: ConversationStatus = ConversationStatus.ACTIVE
    created_at: datetime
    updated_at: datetime
    last_active_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    contact_name: str | None = None
    last_inbound_at: datetime | None = None
    last_outbound_at: datetime | None = None
    typing_until: datetime | None = None


class Contact(Record):
    id: str
    wa_id: str
    profile_name: str | None = None
    display_name: str | None = None
    customer_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


class Note(Record):
    id: str
    contact_id: str
    name: str | None = None
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


class Template(Record):
    id: str
    business_account_id: str
    name: str
    language: str
    category: str
    status: TemplateStatus
    parameter_format: str = "POSITIONAL"
    components: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime


class Media(Record):
    id: str
    phone_number_id: str
    mime_type: str
    sha256: str
    file_size: int
    filename: str | None = None
    # The bytes, base64-encoded so that the state file stays JSON.
    data_b64: str
    download_token: str
    created_at: datetime


class OutboxEntry(Record):
    """One call the service made that Kapso accepted: a send or a mark-as-read."""

    kind: str
    message_id: str | None = None
    phone_number_id: str
    to: str | None = None
    request: dict[str, Any]
    at: datetime


class DeliveryAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    latency_ms: float


class Delivery(Record):
    """One webhook delivery (with its retries) to the configured URL."""

    id: str
    event: str
    idempotency_key: str
    url: str | None
    payload_version: str
    batch_size: int | None = None
    body: str
    headers: dict[str, str]
    state: str = "pending"
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    created_at: datetime


class FaultKind(StrEnum):
    STATUS = "status"
    LATENCY = "latency"
    DROP = "drop"
    TIMEOUT_AFTER_SEND = "timeout_after_send"


class Fault(BaseModel):
    """A failure to inject on requests whose path matches `path` (a glob)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: FaultKind
    path: str = "*"
    method: str | None = None
    # How many matching requests it affects; None: all of them until removed.
    times: int | None = 1
    status: int = 500
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times
