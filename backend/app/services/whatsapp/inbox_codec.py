"""How a webhook event is kept in the inbox, and read back for processing."""

from __future__ import annotations

from typing import Any

from app.integrations.kapso.api.webhooks import parse_webhook
from app.integrations.kapso.exceptions import KapsoWebhookPayloadError
from app.integrations.kapso.webhook_events import WebhookEvent
from app.repositories.models import InboxEvent, JsonObject
from app.services.whatsapp.processing_errors import PermanentEventError


def inbox_payload(event: WebhookEvent) -> JsonObject:
    """How an event is kept in the inbox: its own body plus what the headers said."""
    return {"event": event.event, "payload_version": event.payload_version, "body": event.raw}


def decode_inbox_event(inbox_event: InboxEvent) -> WebhookEvent:
    """The typed event back from its inbox payload."""
    payload: dict[str, Any] = dict(inbox_event.payload)
    try:
        events = parse_webhook(
            payload.get("body") or {},
            event=str(payload.get("event") or inbox_event.event),
            payload_version=str(payload.get("payload_version") or "") or None,
        )
    except KapsoWebhookPayloadError as exc:
        raise PermanentEventError(f"stored payload cannot be parsed: {exc}") from exc
    if len(events) != 1:
        raise PermanentEventError(f"stored payload holds {len(events)} events, expected 1")
    return events[0]
