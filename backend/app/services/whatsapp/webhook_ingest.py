"""Accepting Kapso's webhooks: verify, parse, record durably — and nothing slower.

Kapso allows 10 s and retries anything but a 200; Meta advises answering in well under a
second. So the request only checks the signature, parses and records the events in the inbox
(one transaction, de-duplicated by unique constraints); the worker does the rest.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from app.core.errors import AppError, BadRequestError, ServiceUnavailableError
from app.core.phone import try_normalize_phone
from app.integrations.kapso.api.webhooks import (
    BATCH_HEADER,
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    PAYLOAD_VERSION_HEADER,
    SIGNATURE_HEADER,
    SignatureVerifier,
    parse_webhook,
)
from app.integrations.kapso.exceptions import KapsoWebhookPayloadError
from app.integrations.kapso.webhook_events import ConversationEvent, MessageEvent, WebhookEvent
from app.repositories.errors import StoreError
from app.repositories.inbox import InboxStore
from app.repositories.models import NewInboxEvent
from app.services.whatsapp.inbox_codec import inbox_payload

logger = logging.getLogger(__name__)

_EVENT = EVENT_HEADER.lower()
_SIGNATURE = SIGNATURE_HEADER.lower()
_BATCH = BATCH_HEADER.lower()
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower()
_PAYLOAD_VERSION = PAYLOAD_VERSION_HEADER.lower()


class InvalidWebhookSignatureError(AppError):
    """401: the body is not signed with our webhook secret."""

    status_code = 401
    code = "invalid_signature"


@dataclass(frozen=True, slots=True)
class IngestSummary:
    received: int
    accepted: int
    duplicates: int


class WebhookIngestService:
    """Turns one webhook delivery into durable inbox events."""

    def __init__(
        self,
        inbox: InboxStore,
        *,
        secret: SecretStr | None,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self._inbox = inbox
        self._secret = secret.get_secret_value() if secret is not None else ""
        self._signatures = SignatureVerifier(self._secret)
        self._on_recorded = on_recorded

    async def ingest(self, raw_body: bytes, headers: Mapping[str, str]) -> IngestSummary:
        # HTTP header names are case-insensitive; plain mappings are not.
        headers = {name.lower(): value for name, value in headers.items()}
        self._check_signature(raw_body, headers)
        try:
            # `parse_webhook_request` would search every header for each of these (its
            # case-insensitive fallback); the names here are already lowercase.
            events = parse_webhook(
                raw_body,
                event=headers.get(_EVENT),
                batch_header=headers.get(_BATCH),
                payload_version=headers.get(_PAYLOAD_VERSION),
            )
        except KapsoWebhookPayloadError as exc:
            raise BadRequestError(str(exc), code="invalid_payload") from exc
        records = to_inbox_events(events, raw_body, headers)
        try:
            results = await self._inbox.record_inbox_events(records)
        except StoreError as exc:
            # Not a 200: Kapso retries, and nothing is lost.
            logger.error("Could not record webhook events: %s", type(exc).__name__)
            raise ServiceUnavailableError(
                "Could not record the events; retry later", code="store_unavailable"
            ) from exc
        accepted = sum(1 for result in results if result.is_new)
        if accepted and self._on_recorded is not None:
            self._on_recorded()
        return IngestSummary(len(results), accepted, len(results) - accepted)

    def _check_signature(self, raw_body: bytes, headers: Mapping[str, str]) -> None:
        if not self._secret:
            # Only reachable in development: production refuses to start without the secret.
            logger.warning(
                "UNSIGNED WEBHOOK ACCEPTED: KAPSO_WEBHOOK_SECRET is not set (development only)"
            )
            return
        if not self._signatures.verify(raw_body, headers.get(_SIGNATURE)):
            raise InvalidWebhookSignatureError(
                "Missing or invalid X-Webhook-Signature", code="invalid_signature"
            )


def to_inbox_events(
    events: list[WebhookEvent], raw_body: bytes, headers: Mapping[str, str]
) -> list[NewInboxEvent]:
    """Inbox rows for a delivery's events, keyed so a retried delivery is recorded once.

    `headers` has lowercase names.
    """
    key = headers.get(_IDEMPOTENCY) or (
        # No key (a hand-made request): the same body is the same delivery.
        "sha256:" + hashlib.sha256(raw_body).hexdigest()
    )
    is_batch = len(events) > 1 or (headers.get(_BATCH) or "").lower() == "true"
    # Built without validation: every field is a non-empty string or None by construction, and
    # the payload is the body orjson decoded (JSON values only). Validating it again walked the
    # whole delivery a second time on every request.
    return [
        NewInboxEvent.model_construct(
            idempotency_key=f"{key}:{index}" if is_batch else key,
            event=event.event or "unknown",
            wamid=event.wamid if isinstance(event, MessageEvent) else None,
            conversation_key=conversation_key(event),
            payload=inbox_payload(event),
        )
        for index, event in enumerate(events)
    ]


def conversation_key(event: WebhookEvent) -> str | None:
    """What orders processing: Kapso's conversation id, else the contact's number."""
    if isinstance(event, ConversationEvent):
        return event.conversation_id
    if isinstance(event, MessageEvent):
        if event.conversation_id:
            return event.conversation_id
        phone = try_normalize_phone(event.contact_phone)
        return f"phone:{phone}" if phone else None
    return None
