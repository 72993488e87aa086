"""Kapso webhooks: signature verification and typed parsing of deliveries (no HTTP involved).

Verify first, over the exact bytes received, then parse: Kapso signs the raw body, and any
re-serialisation (as in Kapso's own examples) can change the bytes and break the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from app.integrations.kapso.exceptions import KapsoWebhookPayloadError
from app.integrations.kapso.webhook_events import (
    CONVERSATION_EVENT_NAMES,
    MESSAGE_EVENT_NAMES,
    ConversationEvent,
    ConversationPayload,
    EventMedia,
    KapsoEventName,
    MediaContent,
    MessageDirection,
    MessageEvent,
    MessagePayloadV1,
    MessagePayloadV2,
    MessageStatus,
    PayloadVersion,
    ReplySelection,
    StatusError,
    UnknownEvent,
    WebhookEvent,
    WebhookMessage,
)

EVENT_HEADER = "X-Webhook-Event"
SIGNATURE_HEADER = "X-Webhook-Signature"
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
PAYLOAD_VERSION_HEADER = "X-Webhook-Payload-Version"
BATCH_HEADER = "X-Webhook-Batch"
BATCH_SIZE_HEADER = "X-Batch-Size"

_SIGNATURE_PREFIX = "sha256="
_HEX_DIGITS = frozenset(string.hexdigits)
_SHA256_HEX_LENGTH = 64

_STATUS_BY_EVENT: dict[str, MessageStatus] = {
    KapsoEventName.MESSAGE_RECEIVED: MessageStatus.RECEIVED,
    KapsoEventName.MESSAGE_SENT: MessageStatus.SENT,
    KapsoEventName.MESSAGE_DELIVERED: MessageStatus.DELIVERED,
    KapsoEventName.MESSAGE_READ: MessageStatus.READ,
    KapsoEventName.MESSAGE_FAILED: MessageStatus.FAILED,
}
_KNOWN_EVENT_NAMES = frozenset(name.value for name in KapsoEventName)

RawBody = bytes | bytearray | memoryview | str | Mapping[str, Any]
PayloadT = TypeVar("PayloadT", bound=BaseModel)


# Signatures -------------------------------------------------------------------------------------
def _secret_bytes(secret: str | SecretStr | None) -> bytes | None:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    if not isinstance(secret, str) or not secret:
        return None
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no key Kapso could have used
        return None


def _normalise_signature(signature: object) -> str | None:
    """The signature as 64 lowercase hex characters, or None when it cannot be one."""
    if not isinstance(signature, str):
        return None
    text = signature.strip()
    if text[: len(_SIGNATURE_PREFIX)].lower() == _SIGNATURE_PREFIX:
        text = text[len(_SIGNATURE_PREFIX) :]
    # compare_digest only accepts ASCII strings; checking first keeps it from raising.
    if len(text) != _SHA256_HEX_LENGTH or not text.isascii() or not set(text) <= _HEX_DIGITS:
        return None
    return text.lower()


class SignatureVerifier:
    """`verify_signature` under one secret, keyed once: the webhook route checks every delivery,
    and copying a keyed HMAC is cheaper than keying a new one each time."""

    def __init__(self, secret: str | SecretStr | None) -> None:
        key = _secret_bytes(secret)
        self._keyed = hmac.new(key, digestmod=hashlib.sha256) if key is not None else None

    def verify(self, raw_body: bytes | bytearray | memoryview, signature: str | None) -> bool:
        """See `verify_signature`."""
        expected_hex = _normalise_signature(signature)
        # A body that is not bytes (e.g. already decoded text) cannot be the bytes Kapso signed.
        if (
            expected_hex is None
            or self._keyed is None
            or not isinstance(raw_body, bytes | bytearray | memoryview)
        ):
            return False
        mac = self._keyed.copy()
        mac.update(raw_body)
        return hmac.compare_digest(mac.hexdigest(), expected_hex)


def verify_signature(
    raw_body: bytes | bytearray | memoryview,
    signature: str | None,
    secret: str | SecretStr | None,
) -> bool:
    """Whether `signature` (`X-Webhook-Signature`) is the HMAC-SHA256 of `raw_body` under `secret`.

    The signature is lowercase hex; a `sha256=` prefix and uppercase hex are tolerated. Any
    missing or malformed input (no signature, no secret, wrong length, non-hex) gives False,
    never an exception, so a caller can answer 401 without special cases.
    """
    return SignatureVerifier(secret).verify(raw_body, signature)


# Parsing ----------------------------------------------------------------------------------------
def _decode(raw_body: RawBody) -> dict[str, Any]:
    if isinstance(raw_body, Mapping):
        return dict(raw_body)
    try:
        decoded: object = orjson.loads(raw_body)
    except orjson.JSONDecodeError as exc:
        raise KapsoWebhookPayloadError(f"webhook body is not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise KapsoWebhookPayloadError(
            f"webhook body must be a JSON object, not {type(decoded).__name__}"
        )
    return decoded


def _normalise_event_name(value: object) -> str | None:
    """Trimmed, lower-cased event name; a known name sent without `whatsapp.` gets it back."""
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    if not name:
        return None
    if name not in _KNOWN_EVENT_NAMES and f"whatsapp.{name}" in _KNOWN_EVENT_NAMES:
        return f"whatsapp.{name}"
    return name


def _event_name_in_body(body: Mapping[str, Any]) -> str | None:
    # Batches and some non-message events name themselves; version 2 message bodies do not.
    return _normalise_event_name(body.get("type")) or _normalise_event_name(body.get("event"))


def _normalise_version(value: str | None) -> PayloadVersion | None:
    text = (value or "").strip().lower()
    if text in {"v1", "1"}:
        return "v1"
    if text in {"v2", "2"}:
        return "v2"
    return None


def _version_from_shape(item: Mapping[str, Any]) -> PayloadVersion:
    message = item.get("message")
    if isinstance(message, dict) and "message_type" in message:
        return "v1"
    if "whatsapp_config" in item:
        return "v1"
    return "v2"


def _is_batch(body: Mapping[str, Any], batch_header: str | None) -> bool:
    if batch_header is not None and batch_header.strip().lower() == "true":
        return True
    flag = body.get("batch")
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


def _validate(model: type[PayloadT], item: dict[str, Any], where: str) -> PayloadT:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        # Locations and messages only: input values may hold customers' messages.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)[:5]
        )
        raise KapsoWebhookPayloadError(f"{where} is not a valid Kapso payload: {problems}") from exc


def _first_text(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate:
            return candidate
    return None


def _infer_direction(event: str) -> MessageDirection:
    if event == KapsoEventName.MESSAGE_RECEIVED:
        return MessageDirection.INBOUND
    return MessageDirection.OUTBOUND


def _reply_of(message: WebhookMessage) -> ReplySelection | None:
    interactive = message.interactive
    if interactive is not None and interactive.button_reply is not None:
        button = interactive.button_reply
        return ReplySelection(kind="button_reply", id=button.id, title=button.title)
    if interactive is not None and interactive.list_reply is not None:
        row = interactive.list_reply
        return ReplySelection(
            kind="list_reply", id=row.id, title=row.title, description=row.description
        )
    if message.button is not None:
        return ReplySelection(kind="button", id=message.button.payload, title=message.button.text)
    return None


def _media_of(message: WebhookMessage) -> EventMedia | None:
    content = message.media or MediaContent()
    kapso = message.kapso
    media_data = kapso.media_data if kapso else None
    kapso_url = kapso.media_url if kapso else None
    if message.media is None and kapso_url is None and media_data is None:
        return None
    return EventMedia(
        id=content.id,
        # Kapso's URL first: it downloads without Meta credentials; `link` is for sends by URL.
        url=_first_text(kapso_url, media_data.url if media_data else None, content.link),
        mime_type=_first_text(content.mime_type, media_data.content_type if media_data else None),
        filename=_first_text(content.filename, media_data.filename if media_data else None),
        caption=content.caption,
        sha256=content.sha256,
        byte_size=media_data.byte_size if media_data else None,
    )


def _message_event_v2(item: dict[str, Any], event: str, where: str) -> MessageEvent:
    payload = _validate(MessagePayloadV2, item, where)
    message = payload.message
    kapso = message.kapso
    conversation = payload.conversation
    statuses = kapso.statuses if kapso else ()
    direction = (kapso.direction if kapso else None) or _infer_direction(event)
    conversation_phone = conversation.phone_number if conversation else None
    recipient_from_status = next((s.recipient_id for s in statuses if s.recipient_id), None)
    media = _media_of(message)
    reply = _reply_of(message)
    transcript = kapso.transcript.text if kapso and kapso.transcript else None
    status_from_meta = next((s.status for s in reversed(statuses) if s.status), None)
    errors: tuple[StatusError, ...] = tuple(error for s in statuses for error in s.errors)
    return MessageEvent(
        event=event,
        payload_version="v2",
        wamid=message.id,
        kapso_message_id=kapso.id if kapso else None,
        conversation_id=conversation.id if conversation else None,
        conversation=conversation,
        phone_number_id=payload.phone_number_id
        or (conversation.phone_number_id if conversation else None),
        sender_phone=message.from_
        or (conversation_phone if direction is MessageDirection.INBOUND else None),
        recipient_phone=message.to
        or recipient_from_status
        or (conversation_phone if direction is MessageDirection.OUTBOUND else None),
        contact_name=_first_text(
            conversation.display_name if conversation else None,
            kapso.contact_name if kapso else None,
        ),
        direction=direction,
        origin=kapso.origin if kapso else None,
        message_type=message.type,
        text=_first_text(
            message.text.body if message.text else None,
            media.caption if media else None,
            kapso.content if kapso else None,
            transcript,
            reply.title if reply else None,
        ),
        media=media,
        reply=reply,
        context_wamid=message.context.id if message.context else None,
        location=message.location,
        contacts=message.contacts,
        reaction=message.reaction,
        transcript=transcript,
        timestamp=message.timestamp
        or next((s.timestamp for s in reversed(statuses) if s.timestamp), None),
        is_new_conversation=payload.is_new_conversation,
        status=(kapso.status if kapso else None) or status_from_meta or _STATUS_BY_EVENT.get(event),
        processing_status=kapso.processing_status if kapso else None,
        errors=errors,
        callback_data=next(
            (s.biz_opaque_callback_data for s in reversed(statuses) if s.biz_opaque_callback_data),
            None,
        ),
        raw=item,
    )


def _message_event_v1(item: dict[str, Any], event: str, where: str) -> MessageEvent:
    payload = _validate(MessagePayloadV1, item, where)
    message = payload.message
    conversation = payload.conversation
    config = payload.whatsapp_config
    direction = message.direction or _infer_direction(event)
    phone = message.phone_number or (conversation.phone_number if conversation else None)
    return MessageEvent(
        event=event,
        payload_version="v1",
        # Version 1's `id` is Kapso's own; the wamid, when known, is `whatsapp_message_id`.
        wamid=message.whatsapp_message_id or message.id,
        kapso_message_id=message.id,
        conversation_id=conversation.id if conversation else None,
        conversation=conversation,
        phone_number_id=_first_text(
            payload.phone_number_id,
            config.phone_number_id if config else None,
            conversation.phone_number_id if conversation else None,
        ),
        sender_phone=phone if direction is MessageDirection.INBOUND else None,
        recipient_phone=phone if direction is MessageDirection.OUTBOUND else None,
        contact_name=conversation.display_name if conversation else None,
        direction=direction,
        origin=message.origin,
        message_type=message.message_type,
        text=message.content,
        media=EventMedia(url=message.media_url) if message.media_url else None,
        timestamp=message.created_at,
        is_new_conversation=payload.is_new_conversation,
        status=message.status or _STATUS_BY_EVENT.get(event),
        raw=item,
    )


def _conversation_event(
    item: dict[str, Any], event: str, version: PayloadVersion, where: str
) -> ConversationEvent:
    payload = _validate(ConversationPayload, item, where)
    return ConversationEvent(
        event=event,
        payload_version=version,
        conversation=payload.conversation,
        phone_number_id=payload.phone_number_id or payload.conversation.phone_number_id,
        inactivity_minutes=payload.inactivity.minutes if payload.inactivity else None,
        since_message=payload.since_message,
        raw=item,
    )


def _parse_item(
    item: dict[str, Any],
    event: str | None,
    version_hint: PayloadVersion | None,
    where: str,
) -> WebhookEvent:
    if event not in MESSAGE_EVENT_NAMES and event not in CONVERSATION_EVENT_NAMES:
        return UnknownEvent(event=event, payload_version=version_hint, raw=item)
    assert event is not None  # narrowed by the membership test above
    version = version_hint or _version_from_shape(item)
    if event in CONVERSATION_EVENT_NAMES:
        return _conversation_event(item, event, version, where)
    if version == "v1":
        return _message_event_v1(item, event, where)
    return _message_event_v2(item, event, where)


def parse_webhook(
    raw_body: RawBody,
    *,
    event: str | None,
    batch_header: str | None = None,
    payload_version: str | None = None,
) -> list[WebhookEvent]:
    """Parse one delivery into its events (several for a batch), in the order Kapso sent them.

    `event`, `batch_header` and `payload_version` are the values of the `X-Webhook-Event`,
    `X-Webhook-Batch` and `X-Webhook-Payload-Version` headers (None when absent). Unknown
    event names become `UnknownEvent`; unknown message types become `WebhookMessageType.UNKNOWN`.
    Raises `KapsoWebhookPayloadError` for a body that is not a JSON object or not shaped as
    Kapso sends it (e.g. a batch whose `data` is not a list).
    """
    body = _decode(raw_body)
    version_hint = _normalise_version(payload_version)
    header_event = _normalise_event_name(event)
    body_event = header_event or _event_name_in_body(body)
    if not _is_batch(body, batch_header):
        return [_parse_item(body, body_event, version_hint, "webhook body")]
    data = body.get("data")
    if not isinstance(data, list):
        raise KapsoWebhookPayloadError(
            f"webhook batch `data` must be a list, not {type(data).__name__}"
        )
    events: list[WebhookEvent] = []
    for index, item in enumerate(data):
        where = f"webhook batch item {index}"
        if not isinstance(item, dict):
            raise KapsoWebhookPayloadError(f"{where} must be an object, not {type(item).__name__}")
        item_event = body_event or _event_name_in_body(item)
        events.append(_parse_item(item, item_event, version_hint, where))
    return events


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; HTTP header names are not.
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def parse_webhook_request(raw_body: RawBody, headers: Mapping[str, str]) -> list[WebhookEvent]:
    """`parse_webhook`, reading the event, batch and version headers from `headers`."""
    return parse_webhook(
        raw_body,
        event=_header(headers, EVENT_HEADER),
        batch_header=_header(headers, BATCH_HEADER),
        payload_version=_header(headers, PAYLOAD_VERSION_HEADER),
    )


class WebhooksAPI:
    """Webhook helpers exposed as `KapsoClient.webhooks`; `secret` is the default signing key."""

    def __init__(self, secret: str | SecretStr | None = None) -> None:
        self._secret = secret

    @staticmethod
    def verify_signature(
        raw_body: bytes | bytearray | memoryview,
        signature: str | None,
        secret: str | SecretStr | None,
    ) -> bool:
        """See the module-level `verify_signature`."""
        # Inside a method, the name resolves to the module function, not to this method.
        return verify_signature(raw_body, signature, secret)

    def verify(
        self,
        raw_body: bytes | bytearray | memoryview,
        signature: str | None,
        secret: str | SecretStr | None = None,
    ) -> bool:
        """`verify_signature` with this instance's secret unless another is given."""
        return verify_signature(raw_body, signature, secret if secret is not None else self._secret)

    @staticmethod
    def parse(
        raw_body: RawBody,
        *,
        event: str | None,
        batch_header: str | None = None,
        payload_version: str | None = None,
    ) -> list[WebhookEvent]:
        """See the module-level `parse_webhook`."""
        return parse_webhook(
            raw_body, event=event, batch_header=batch_header, payload_version=payload_version
        )

    @staticmethod
    def parse_request(raw_body: RawBody, headers: Mapping[str, str]) -> list[WebhookEvent]:
        """See the module-level `parse_webhook_request`."""
        return parse_webhook_request(raw_body, headers)


__all__ = [
    "BATCH_HEADER",
    "BATCH_SIZE_HEADER",
    "EVENT_HEADER",
    "IDEMPOTENCY_HEADER",
    "PAYLOAD_VERSION_HEADER",
    "SIGNATURE_HEADER",
    "WebhooksAPI",
    "parse_webhook",
    "parse_webhook_request",
    "verify_signature",
]
