"""Kapso webhooks: signature verification and parsing of every stored delivery body."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from app.integrations.kapso.api.webhooks import (
    WebhooksAPI,
    parse_webhook,
    parse_webhook_request,
    verify_signature,
)
from app.integrations.kapso.exceptions import KapsoError, KapsoWebhookPayloadError
from app.integrations.kapso.webhook_events import (
    ConversationEvent,
    KapsoEventName,
    MessageDirection,
    MessageEvent,
    MessageOrigin,
    MessageStatus,
    UnknownEvent,
    WebhookConversationStatus,
    WebhookEvent,
    WebhookMessageType,
)

FIXTURES = Path(__file__).parent / "fixtures" / "kapso-webhooks"
SECRET = "whsec_test_secret_for_fizko"
MARIA = "María González"
MARIA_CONVERSATION = "5f0c9a4e-2b7d-4c1e-9a55-3e1f0b6d2a71"
PHONE_NUMBER_ID = "1029384756"
DELIVERED_WAMID = "wamid.HBgLNTY5MTIzNDU2NzgVAgARGBJBQkNERUYxMjM0NTY3ODkwAA=="


def _fixture_files() -> list[Path]:
    return sorted(FIXTURES.rglob("*.json"))


def _relative(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def _headers_for(path: Path) -> dict[str, str]:
    """The headers Kapso sends with this file, following the fixtures README."""
    parts = path.name.removesuffix(".json").split(".")
    headers = {
        "X-Webhook-Event": "whatsapp." + ".".join(parts[:2]),
        "X-Webhook-Payload-Version": path.parent.name,
    }
    if len(parts) > 2 and parts[2].startswith("batch"):
        headers["X-Webhook-Batch"] = "true"
    return headers


def _parse_fixture(name: str) -> list[WebhookEvent]:
    path = FIXTURES / name
    return parse_webhook_request(path.read_bytes(), _headers_for(path))


def _attr(obj: object, dotted: str) -> object:
    for name in dotted.split("."):
        if isinstance(obj, tuple):
            obj = obj[int(name)]
        elif isinstance(obj, dict):
            obj = obj[name]
        else:
            obj = getattr(obj, name)
    return obj


# Table of expectations: per file, per event, attribute path → value ----------------------------
@dataclass(frozen=True)
class Case:
    file: str
    events: tuple[tuple[type[object], Mapping[str, object]], ...] = field(default=())


CASES: tuple[Case, ...] = (
    Case(
        "v2/message.received.text.json",
        (
            (
                MessageEvent,
                {
                    "event": KapsoEventName.MESSAGE_RECEIVED,
                    "payload_version": "v2",
                    "wamid": "wamid.HBgLNTY5MTIzNDU2NzgVAgASGBQzQUIwRTc0QjYxRkM0MTgyQjk2NwA=",
                    "direction": MessageDirection.INBOUND,
                    "origin": MessageOrigin.CLOUD_API,
                    "message_type": WebhookMessageType.TEXT,
                    "text": "Hola, ¿cuánto IVA debo pagar este mes?",
                    "sender_phone": "56912345678",
                    "recipient_phone": None,
                    "contact_phone": "+56912345678",
                    "contact_name": MARIA,
                    "conversation_id": MARIA_CONVERSATION,
                    "phone_number_id": PHONE_NUMBER_ID,
                    "timestamp": datetime(2025, 11, 25, 12, 0, tzinfo=UTC),
                    "status": MessageStatus.RECEIVED,
                    "processing_status": "pending",
                    "is_new_conversation": False,
                    "media": None,
                    "reply": None,
                    "conversation.kapso.messages_count": 14,
                    "conversation.last_active_at": datetime(2025, 11, 25, 12, 0, tzinfo=UTC),
                },
            ),
        ),
    ),
    Case(
        "v2/message.received.image.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.IMAGE,
                    "text": "Boleta de compra",
                    "media.id": "1480395761029384",
                    "media.url": "https://api.kapso.ai/meta/whatsapp/media_download?token=example-token",
                    "media.mime_type": "image/jpeg",
                    "media.filename": "boleta.jpg",
                    "media.caption": "Boleta de compra",
                    "media.byte_size": 184233,
                    "sender_phone": "56912345678",
                    "contact_name": MARIA,
                },
            ),
        ),
    ),
    Case(
        "v2/message.received.button_reply.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.INTERACTIVE,
                    "reply.kind": "button_reply",
                    "reply.id": "opt1",
                    "reply.title": "Opción 1",
                    "text": "Opción 1",
                    "context_wamid": DELIVERED_WAMID,
                },
            ),
        ),
    ),
    Case(
        "v2/message.delivered.json",
        (
            (
                MessageEvent,
                {
                    "event": KapsoEventName.MESSAGE_DELIVERED,
                    "wamid": DELIVERED_WAMID,
                    "direction": MessageDirection.OUTBOUND,
                    "status": MessageStatus.DELIVERED,
                    "callback_data": "out_7f3a2c",
                    "recipient_phone": "56912345678",
                    "sender_phone": None,
                    "contact_phone": "+56912345678",
                    "errors": (),
                },
            ),
        ),
    ),
    Case(
        "v2/message.failed.json",
        (
            (
                MessageEvent,
                {
                    "event": KapsoEventName.MESSAGE_FAILED,
                    "status": MessageStatus.FAILED,
                    "error_codes": (131047,),
                    "errors.0.code": 131047,
                    "errors.0.title": "Re-engagement message",
                    "callback_data": None,
                    "text": "Recordatorio: vence tu F29 el día 20.",
                },
            ),
        ),
    ),
    Case(
        "v2/message.sent.business_app.json",
        (
            (
                MessageEvent,
                {
                    "event": KapsoEventName.MESSAGE_SENT,
                    "direction": MessageDirection.OUTBOUND,
                    "origin": MessageOrigin.BUSINESS_APP,
                    "status": MessageStatus.SENT,
                    "recipient_phone": "56912345678",
                    "contact_name": MARIA,
                    "text": "Hola María, te escribe Camila del equipo de Fizko.",
                },
            ),
        ),
    ),
    Case(
        "v2/conversation.ended.json",
        (
            (
                ConversationEvent,
                {
                    "event": KapsoEventName.CONVERSATION_ENDED,
                    "conversation_id": MARIA_CONVERSATION,
                    "conversation.status": WebhookConversationStatus.ENDED,
                    "conversation.phone_number": "+56912345678",
                    "contact_name": MARIA,
                    "phone_number_id": PHONE_NUMBER_ID,
                    "inactivity_minutes": None,
                },
            ),
        ),
    ),
    Case(
        "v2/message.received.batch.json",
        (
            (
                MessageEvent,
                {
                    "wamid": "wamid.BATCH0000000000000000000000000000000001",
                    "text": "Buenas tardes",
                    "sender_phone": "56987654321",
                    "contact_name": "Pedro Soto",
                    "is_new_conversation": True,
                },
            ),
            (
                MessageEvent,
                {
                    "wamid": "wamid.BATCH0000000000000000000000000000000002",
                    "text": "Necesito ayuda con mi declaración",
                    "is_new_conversation": False,
                },
            ),
        ),
    ),
    Case(
        "v1/message.received.text.json",
        (
            (
                MessageEvent,
                {
                    "payload_version": "v1",
                    "wamid": "wamid.HBgLNTY5MTIzNDU2NzgVAgASGBRWMUxFR0FDWTAwMDAwMDAwMDAwMQA=",
                    "kapso_message_id": "3c1d2e9f-7a6b-4c5d-8e9f-0a1b2c3d4e5f",
                    "text": "Hola, necesito mi certificado",
                    "message_type": WebhookMessageType.TEXT,
                    "direction": MessageDirection.INBOUND,
                    "sender_phone": "+56912345678",
                    "contact_name": MARIA,
                    "phone_number_id": PHONE_NUMBER_ID,
                    "conversation_id": MARIA_CONVERSATION,
                    "timestamp": datetime(2025, 11, 25, 12, 10, tzinfo=UTC),
                },
            ),
        ),
    ),
    # Our own cases -----------------------------------------------------------------------------
    Case(
        "extra/v2/contact.identity_changed.json",
        (
            (
                UnknownEvent,
                {"event": "whatsapp.contact.identity_changed", "raw.contact.wa_id": "56912345678"},
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.unknown_type.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.UNKNOWN,
                    "text": "[poll vote] Sí",
                    "conversation.status": WebhookConversationStatus.UNKNOWN,
                    "conversation.metadata": {"tier": "pro"},
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.document.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.DOCUMENT,
                    "text": None,
                    "media.id": "9876543210123456",
                    "media.filename": "F29-noviembre.pdf",
                    "media.mime_type": "application/pdf",
                    "media.url": "https://api.kapso.ai/meta/whatsapp/media_download?token=doc-token",
                    "media.byte_size": 52011,
                    "media.caption": None,
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.list_reply.json",
        (
            (
                MessageEvent,
                {
                    "reply.kind": "list_reply",
                    "reply.id": "iva_nov",
                    "reply.title": "IVA noviembre",
                    "reply.description": "Ver el IVA estimado",
                    "text": "IVA noviembre",
                    "context_wamid": "wamid.EXTRA000000000000000000000000000LISTMENU",
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.button.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.BUTTON,
                    "reply.kind": "button",
                    "reply.id": "PAY_NOW",
                    "reply.title": "Pagar ahora",
                    "text": "Pagar ahora",
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.audio_transcript.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.AUDIO,
                    "transcript": "Hola, quiero saber cuánto debo de IVA",
                    "text": "Hola, quiero saber cuánto debo de IVA",
                    "media.mime_type": "audio/ogg; codecs=opus",
                    "media.url": "https://api.kapso.ai/meta/whatsapp/media_download?token=audio-token",
                    "processing_status": "completed",
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.location.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.LOCATION,
                    "location.latitude": -33.4489,
                    "location.name": "Oficina",
                    "text": None,
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.reaction.json",
        (
            (
                MessageEvent,
                {
                    "message_type": WebhookMessageType.REACTION,
                    "reaction.emoji": "👍",
                    "reaction.message_id": DELIVERED_WAMID,
                    "conversation": None,
                    "conversation_id": None,
                    "contact_phone": "56912345678",
                    "phone_number_id": PHONE_NUMBER_ID,
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.business_scoped.json",
        (
            (
                MessageEvent,
                {
                    "sender_phone": None,
                    "contact_phone": None,
                    "text": "Hola",
                    "is_new_conversation": True,
                },
            ),
        ),
    ),
    Case(
        "extra/v2/conversation.inactive.json",
        (
            (
                ConversationEvent,
                {
                    "event": KapsoEventName.CONVERSATION_INACTIVE,
                    "inactivity_minutes": 30,
                    "since_message.id": (
                        "wamid.HBgLNTY5MTIzNDU2NzgVAgASGBQzQUIwRTc0QjYxRkM0MTgyQjk2NwA="
                    ),
                    "conversation.status": WebhookConversationStatus.ACTIVE,
                },
            ),
        ),
    ),
    Case(
        "extra/v2/conversation.created.json",
        (
            (
                ConversationEvent,
                {
                    "event": KapsoEventName.CONVERSATION_CREATED,
                    "conversation_id": "9b1e7c2a-44f0-4d8e-b3a1-6c2d9e0f1a23",
                    "contact_name": "Pedro Soto",
                    "conversation.created_at": datetime(2025, 11, 25, 12, 5, tzinfo=UTC),
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.read.json",
        (
            (
                MessageEvent,
                {
                    "event": KapsoEventName.MESSAGE_READ,
                    "status": MessageStatus.READ,
                    "callback_data": "out_7f3a2c",
                    "text": "Tu IVA estimado de noviembre es $152.300.",
                },
            ),
        ),
    ),
    Case(
        "extra/v2/message.received.batch_single.json",
        ((MessageEvent, {"wamid": "wamid.BATCHSINGLE00000000000000000000000000001"}),),
    ),
    Case(
        "extra/v1/message.received.image.json",
        (
            (
                MessageEvent,
                {
                    "payload_version": "v1",
                    "wamid": "wamid.V1IMAGE000000000000000000000000000000001",
                    "message_type": WebhookMessageType.IMAGE,
                    "text": "Foto de la boleta",
                    "media.url": "https://app.kapso.ai/media/v1-image.jpg",
                    "sender_phone": "+56912345678",
                },
            ),
        ),
    ),
    Case(
        "extra/v1/message.sent.no_wamid.json",
        (
            (
                MessageEvent,
                {
                    "payload_version": "v1",
                    "wamid": "1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b",
                    "direction": MessageDirection.OUTBOUND,
                    "recipient_phone": "56912345678",
                    "status": MessageStatus.PENDING,
                    "phone_number_id": None,
                    # A naive ISO time is read as UTC rather than rejected.
                    "timestamp": datetime(2025, 11, 25, 12, 21, tzinfo=UTC),
                },
            ),
        ),
    ),
)


def test_every_fixture_file_has_a_case() -> None:
    assert {case.file for case in CASES} == {_relative(path) for path in _fixture_files()}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.file)
def test_fixture_parses_as_expected(case: Case) -> None:
    events = _parse_fixture(case.file)

    assert len(events) == len(case.events)
    for event, (expected_type, expected) in zip(events, case.events, strict=True):
        assert type(event) is expected_type
        for path, value in expected.items():
            assert _attr(event, path) == value, path


@pytest.mark.parametrize("path", _fixture_files(), ids=_relative)
def test_every_event_keeps_its_raw_item_and_has_a_dedup_key(path: Path) -> None:
    body = orjson.loads(path.read_bytes())
    items = body["data"] if body.get("batch") else [body]

    events = parse_webhook_request(path.read_bytes(), _headers_for(path))

    assert [event.raw for event in events] == items
    assert all(event.dedup_key for event in events)


def test_timestamps_are_timezone_aware() -> None:
    for path in _fixture_files():
        for event in parse_webhook_request(path.read_bytes(), _headers_for(path)):
            if isinstance(event, MessageEvent) and event.timestamp is not None:
                assert event.timestamp.utcoffset() is not None


# Batches --------------------------------------------------------------------------------------
BATCH = (FIXTURES / "v2/message.received.batch.json").read_bytes()
BATCH_WAMIDS = [
    "wamid.BATCH0000000000000000000000000000000001",
    "wamid.BATCH0000000000000000000000000000000002",
]


def _wamids(events: list[WebhookEvent]) -> list[str | None]:
    return [event.wamid for event in events if isinstance(event, MessageEvent)]


def test_batch_with_header() -> None:
    events = parse_webhook(BATCH, event="whatsapp.message.received", batch_header="true")

    assert _wamids(events) == BATCH_WAMIDS
    assert all(event.event == KapsoEventName.MESSAGE_RECEIVED for event in events)


def test_batch_detected_from_body_alone_takes_event_from_its_type() -> None:
    events = parse_webhook(BATCH, event=None)

    assert _wamids(events) == BATCH_WAMIDS
    assert all(event.event == KapsoEventName.MESSAGE_RECEIVED for event in events)


def test_batch_header_is_case_insensitive_and_enough_without_body_flag() -> None:
    body = orjson.loads(BATCH)
    del body["batch"]

    events = parse_webhook(orjson.dumps(body), event=None, batch_header=" TRUE ")

    assert _wamids(events) == BATCH_WAMIDS


def test_batch_header_false_still_honours_body_flag() -> None:
    events = parse_webhook(BATCH, event="whatsapp.message.received", batch_header="false")

    assert len(events) == 2


def test_batch_item_may_name_its_own_event() -> None:
    item = orjson.loads((FIXTURES / "v2/conversation.ended.json").read_bytes())
    body = {"batch": True, "data": [{**item, "event": "whatsapp.conversation.ended"}]}

    (event,) = parse_webhook(orjson.dumps(body), event=None)

    assert isinstance(event, ConversationEvent)


def test_empty_batch_gives_no_events() -> None:
    assert parse_webhook(b'{"batch": true, "data": []}', event=None) == []


# Event names and versions -----------------------------------------------------------------------
TEXT_V2 = (FIXTURES / "v2/message.received.text.json").read_bytes()
TEXT_V1 = (FIXTURES / "v1/message.received.text.json").read_bytes()


def test_unknown_event_name_gives_unknown_event_with_raw() -> None:
    (event,) = parse_webhook(TEXT_V2, event="whatsapp.something.new")

    assert isinstance(event, UnknownEvent)
    assert event.event == "whatsapp.something.new"
    assert event.raw == orjson.loads(TEXT_V2)
    assert event.dedup_key.startswith("whatsapp.something.new|sha256:")


def test_no_event_name_anywhere_gives_unknown_event() -> None:
    (event,) = parse_webhook(TEXT_V2, event=None)

    assert isinstance(event, UnknownEvent)
    assert event.event is None


def test_event_name_falls_back_to_body_field() -> None:
    body = {**orjson.loads(TEXT_V2), "type": "whatsapp.message.received"}

    (event,) = parse_webhook(orjson.dumps(body), event=None)

    assert isinstance(event, MessageEvent)


def test_header_event_name_wins_over_body_and_is_normalised() -> None:
    body = {**orjson.loads(TEXT_V2), "type": "whatsapp.conversation.ended"}

    (event,) = parse_webhook(orjson.dumps(body), event="  Message.Received ")

    assert isinstance(event, MessageEvent)
    assert event.event == "whatsapp.message.received"


@pytest.mark.parametrize("version", [None, "v1", "V1", "1"])
def test_v1_detected_from_header_or_shape(version: str | None) -> None:
    (event,) = parse_webhook(TEXT_V1, event="whatsapp.message.received", payload_version=version)

    assert isinstance(event, MessageEvent)
    assert event.payload_version == "v1"
    assert event.text == "Hola, necesito mi certificado"


@pytest.mark.parametrize("version", [None, "v2", "garbage"])
def test_v2_detected_from_header_or_shape(version: str | None) -> None:
    (event,) = parse_webhook(TEXT_V2, event="whatsapp.message.received", payload_version=version)

    assert isinstance(event, MessageEvent)
    assert event.payload_version == "v2"


@pytest.mark.parametrize(
    "raw_body",
    [TEXT_V2, bytearray(TEXT_V2), memoryview(TEXT_V2), TEXT_V2.decode(), orjson.loads(TEXT_V2)],
    ids=["bytes", "bytearray", "memoryview", "str", "mapping"],
)
def test_accepts_bytes_text_and_mappings(raw_body: Any) -> None:
    (event,) = parse_webhook(raw_body, event="whatsapp.message.received")

    assert isinstance(event, MessageEvent)
    assert event.text == "Hola, ¿cuánto IVA debo pagar este mes?"


def test_parse_request_reads_headers_case_insensitively() -> None:
    headers = {"x-webhook-event": "whatsapp.message.received", "x-webhook-batch": "true"}

    assert _wamids(parse_webhook_request(BATCH, headers)) == BATCH_WAMIDS


@pytest.mark.parametrize(
    ("raw_type", "expected"),
    [
        ("text", WebhookMessageType.TEXT),
        ("TEXT", WebhookMessageType.TEXT),
        ("carousel_v9", WebhookMessageType.UNKNOWN),
        ("", WebhookMessageType.UNKNOWN),
        (7, WebhookMessageType.UNKNOWN),
        (None, WebhookMessageType.UNKNOWN),
    ],
)
def test_message_type_never_fails(raw_type: object, expected: WebhookMessageType) -> None:
    body = orjson.loads(TEXT_V2)
    body["message"]["type"] = raw_type

    (event,) = parse_webhook(orjson.dumps(body), event="whatsapp.message.received")

    assert isinstance(event, MessageEvent)
    assert event.message_type is expected


def test_unknown_direction_status_and_origin_become_unknown() -> None:
    body = orjson.loads(TEXT_V2)
    body["message"]["kapso"].update(direction="sideways", status="teleported", origin="carrier")

    (event,) = parse_webhook(orjson.dumps(body), event="whatsapp.message.received")

    assert isinstance(event, MessageEvent)
    assert event.direction is MessageDirection.UNKNOWN
    assert event.status is MessageStatus.UNKNOWN
    assert event.origin is MessageOrigin.UNKNOWN


def test_status_and_direction_inferred_from_event_when_kapso_extension_missing() -> None:
    body = orjson.loads((FIXTURES / "v2/message.delivered.json").read_bytes())
    del body["message"]["kapso"]

    (event,) = parse_webhook(orjson.dumps(body), event="whatsapp.message.delivered")

    assert isinstance(event, MessageEvent)
    assert event.status is MessageStatus.DELIVERED
    assert event.direction is MessageDirection.OUTBOUND


def test_unreadable_timestamp_is_dropped_not_fatal() -> None:
    body = orjson.loads(TEXT_V2)
    body["message"]["timestamp"] = "yesterday-ish"

    (event,) = parse_webhook(orjson.dumps(body), event="whatsapp.message.received")

    assert isinstance(event, MessageEvent)
    assert event.timestamp is None


def test_nulls_for_optional_arrays_objects_and_flags_are_tolerated() -> None:
    body = orjson.loads((FIXTURES / "v2/message.failed.json").read_bytes())
    body["message"]["contacts"] = None
    body["message"]["kapso"]["statuses"][0]["errors"] = None
    body["conversation"]["metadata"] = None
    body["is_new_conversation"] = None

    (event,) = parse_webhook(orjson.dumps(body), event="whatsapp.message.failed")

    assert isinstance(event, MessageEvent)
    assert event.errors == ()
    assert event.contacts == ()
    assert event.conversation is not None
    assert event.conversation.metadata == {}
    assert event.is_new_conversation is False


def test_events_are_frozen() -> None:
    (event,) = parse_webhook(TEXT_V2, event="whatsapp.message.received")
    assert isinstance(event, MessageEvent)

    with pytest.raises(ValidationError):
        event.text = "changed"  # type: ignore[misc]


# De-duplication identities ----------------------------------------------------------------------
def test_dedup_key_is_stable_across_deliveries() -> None:
    first = parse_webhook(TEXT_V2, event="whatsapp.message.received")
    again = parse_webhook(TEXT_V2, event="whatsapp.message.received")

    assert first[0].dedup_key == again[0].dedup_key
    assert first[0].dedup_key.endswith(
        "wamid.HBgLNTY5MTIzNDU2NzgVAgASGBQzQUIwRTc0QjYxRkM0MTgyQjk2NwA="
    )


def test_dedup_key_tells_status_events_of_one_message_apart() -> None:
    (delivered,) = _parse_fixture("v2/message.delivered.json")
    (read,) = _parse_fixture("extra/v2/message.read.json")

    assert isinstance(delivered, MessageEvent)
    assert isinstance(read, MessageEvent)
    assert delivered.wamid == read.wamid
    assert delivered.dedup_key != read.dedup_key


def test_dedup_key_of_conversation_event_names_conversation_event_and_status() -> None:
    (ended,) = _parse_fixture("v2/conversation.ended.json")

    assert ended.dedup_key.startswith(
        f"whatsapp.conversation.ended|{MARIA_CONVERSATION}|ended|2025-11-26T12:00:05+00:00"
    )


def test_dedup_key_of_batch_items_matches_single_delivery() -> None:
    # A failing batch may be re-sent message by message: the identities must coincide.
    batch_events = parse_webhook(BATCH, event="whatsapp.message.received", batch_header="true")
    body = orjson.loads(BATCH)
    singles = [
        parse_webhook(orjson.dumps(item), event="whatsapp.message.received")[0]
        for item in body["data"]
    ]

    assert [e.dedup_key for e in batch_events] == [e.dedup_key for e in singles]


# Malformed bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw_body", "batch_header"),
    [
        (b"not json", None),
        (b"", None),
        (b'{"message": ', None),
        (b"[1, 2]", None),
        (b'"a string"', None),
        (b"null", None),
        (b'{"batch": true, "data": {"message": {}}}', None),
        (b'{"batch": true}', None),
        (b'{"message": {"id": "wamid.x"}}', "true"),
        (b'{"batch": true, "data": [1]}', None),
        (b"\xff\xfe", None),
    ],
    ids=[
        "not-json",
        "empty",
        "truncated",
        "array",
        "string",
        "null",
        "batch-data-object",
        "batch-without-data",
        "batch-header-without-data",
        "batch-item-not-object",
        "not-utf8",
    ],
)
def test_malformed_body_raises_payload_error(raw_body: bytes, batch_header: str | None) -> None:
    with pytest.raises(KapsoWebhookPayloadError) as excinfo:
        parse_webhook(raw_body, event="whatsapp.message.received", batch_header=batch_header)

    assert isinstance(excinfo.value, KapsoError)
    assert excinfo.value.message


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ({"conversation": {"id": "c1"}}, "whatsapp.message.received"),
        ({"message": "hello"}, "whatsapp.message.received"),
        ({"message": {"id": "w", "kapso": {"statuses": {"id": "x"}}}}, "whatsapp.message.read"),
        ({"phone_number_id": "1"}, "whatsapp.conversation.ended"),
        ({"conversation": [1]}, "whatsapp.conversation.created"),
    ],
)
def test_body_not_shaped_like_the_event_raises_payload_error(
    body: dict[str, object], event: str
) -> None:
    with pytest.raises(KapsoWebhookPayloadError, match="not a valid Kapso payload"):
        parse_webhook(orjson.dumps(body), event=event)


def test_payload_error_does_not_echo_message_content() -> None:
    body = {"message": {"id": "w", "text": "secreto del cliente"}}

    with pytest.raises(KapsoWebhookPayloadError) as excinfo:
        parse_webhook(orjson.dumps(body), event="whatsapp.message.received")

    assert "secreto" not in str(excinfo.value)


# Signatures -------------------------------------------------------------------------------------
def _sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


GOOD = _sign(TEXT_V2)


def _tampered(body: bytes) -> bytes:
    return body[:10] + bytes([body[10] ^ 0x01]) + body[11:]


@pytest.mark.parametrize(
    ("body", "signature", "secret", "expected"),
    [
        (TEXT_V2, GOOD, SECRET, True),
        (TEXT_V2, f"sha256={GOOD}", SECRET, True),
        (TEXT_V2, f"SHA256={GOOD}", SECRET, True),
        (TEXT_V2, GOOD.upper(), SECRET, True),
        (TEXT_V2, f"  {GOOD}\n", SECRET, True),
        (TEXT_V2, GOOD, SecretStr(SECRET), True),
        (_tampered(TEXT_V2), GOOD, SECRET, False),
        (TEXT_V2 + b" ", GOOD, SECRET, False),
        (TEXT_V2, GOOD, "another-secret", False),
        (TEXT_V2, _sign(TEXT_V2, "another-secret"), SECRET, False),
        (TEXT_V2, "", SECRET, False),
        (TEXT_V2, None, SECRET, False),
        (TEXT_V2, GOOD, "", False),
        (TEXT_V2, GOOD, None, False),
        (TEXT_V2, GOOD, SecretStr(""), False),
        (TEXT_V2, "sha256=", SECRET, False),
        (TEXT_V2, GOOD[:-1], SECRET, False),
        (TEXT_V2, GOOD + "0", SECRET, False),
        (TEXT_V2, "z" * 64, SECRET, False),
        (TEXT_V2, GOOD[:-1] + "é", SECRET, False),
        (TEXT_V2, "٣" * 64, SECRET, False),
        (TEXT_V2, GOOD, "\ud800", False),
        (TEXT_V2.decode(), GOOD, SECRET, False),
    ],
    ids=[
        "valid",
        "sha256-prefix",
        "uppercase-prefix",
        "uppercase-hex",
        "surrounding-whitespace",
        "secretstr",
        "tampered-one-byte",
        "extra-byte",
        "wrong-secret",
        "signed-with-other-secret",
        "empty-signature",
        "none-signature",
        "empty-secret",
        "none-secret",
        "empty-secretstr",
        "prefix-only",
        "too-short",
        "too-long",
        "non-hex",
        "non-ascii",
        "non-ascii-digits",
        "unencodable-secret",
        "text-body",
    ],
)
def test_verify_signature(body: Any, signature: str | None, secret: Any, expected: bool) -> None:
    assert verify_signature(body, signature, secret) is expected
    assert WebhooksAPI.verify_signature(body, signature, secret) is expected


def test_webhooks_api_uses_its_default_secret() -> None:
    api = WebhooksAPI(SECRET)

    assert api.verify(TEXT_V2, GOOD) is True
    assert api.verify(TEXT_V2, GOOD, "another-secret") is False
    assert WebhooksAPI().verify(TEXT_V2, GOOD) is False


def test_webhooks_api_parses_like_the_module_functions() -> None:
    api = WebhooksAPI()

    assert api.parse(BATCH, event=None) == parse_webhook(BATCH, event=None)
    assert api.parse_request(TEXT_V2, {"X-Webhook-Event": "whatsapp.message.received"}) == (
        parse_webhook(TEXT_V2, event="whatsapp.message.received")
    )


# Properties -------------------------------------------------------------------------------------
@given(
    body=st.binary(max_size=256),
    signature=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=70),
        st.builds(lambda s: "sha256=" + s, st.text(max_size=70)),
    ),
    secret=st.one_of(st.none(), st.text(max_size=40)),
)
def test_verify_signature_never_raises(
    body: bytes, signature: str | None, secret: str | None
) -> None:
    assert verify_signature(body, signature, secret) in {True, False}


@given(body=st.binary(max_size=256), secret=st.text(min_size=1, max_size=40))
def test_verify_signature_accepts_its_own_signatures(body: bytes, secret: str) -> None:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    assert verify_signature(body, signature, secret)
    assert verify_signature(body, "sha256=" + signature.upper(), secret)


_KEYS = st.sampled_from(
    [
        "message",
        "conversation",
        "kapso",
        "batch",
        "data",
        "type",
        "event",
        "id",
        "timestamp",
        "text",
        "body",
        "statuses",
        "errors",
        "code",
        "status",
        "direction",
        "interactive",
        "button_reply",
        "image",
        "media_data",
        "message_type",
        "whatsapp_config",
        "since_message",
        "inactivity",
        "minutes",
        "metadata",
        "phone_number_id",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["true", "v1", "text", "inbound", "1764072000", "2025-11-25T12:00:00Z"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=30,
)
_EVENTS = st.sampled_from([None, "", "whatsapp.unknown", *(name.value for name in KapsoEventName)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_JSON,
    event=_EVENTS,
    batch_header=st.sampled_from([None, "true", "false"]),
    version=st.sampled_from([None, "v1", "v2", "v3"]),
)
def test_parser_raises_only_payload_errors(
    value: object, event: str | None, batch_header: str | None, version: str | None
) -> None:
    try:
        events = parse_webhook(
            orjson.dumps(value), event=event, batch_header=batch_header, payload_version=version
        )
    except KapsoWebhookPayloadError:
        return
    for parsed in events:
        assert isinstance(parsed, MessageEvent | ConversationEvent | UnknownEvent)
        assert parsed.dedup_key


@settings(max_examples=150, deadline=None)
@given(
    message=st.dictionaries(_KEYS, _JSON, max_size=8),
    event=st.sampled_from([name.value for name in KapsoEventName]),
)
def test_parser_on_message_shaped_mappings_raises_only_payload_errors(
    message: dict[str, object], event: str
) -> None:
    body = {"message": message, "conversation": {"id": "c1", **message}, "phone_number_id": "1"}
    try:
        events = parse_webhook(body, event=event)
    except KapsoWebhookPayloadError:
        return
    assert all(parsed.dedup_key for parsed in events)
