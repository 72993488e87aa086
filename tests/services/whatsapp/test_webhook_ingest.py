"""Inbox rows built from deliveries: not validated on the hot path, yet what validation gives."""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.errors import BadRequestError, ServiceUnavailableError
from app.db.pool import Database, PoolOptions
from app.integrations.kapso.api.webhooks import parse_webhook_request, verify_signature
from app.repositories.inbox import InboxStore
from app.repositories.models import InboxState, NewInboxEvent
from app.repositories.stores import Stores
from app.services.whatsapp.webhook_ingest import (
    InvalidWebhookSignatureError,
    WebhookIngestService,
    to_inbox_events,
)

FIXTURES = Path(__file__).parents[2] / "integrations" / "kapso" / "fixtures" / "kapso-webhooks"
SECRET = "whsec_ingest_test"


def _headers_for(path: Path) -> dict[str, str]:
    """The headers Kapso sends with a fixture file (see the fixtures README), lowercased."""
    parts = path.name.removesuffix(".json").split(".")
    headers = {
        "x-webhook-event": "whatsapp." + ".".join(parts[:2]),
        "x-webhook-payload-version": path.parent.name,
        "x-idempotency-key": f"key-{path.name}",
    }
    if len(parts) > 2 and parts[2].startswith("batch"):
        headers["x-webhook-batch"] = "true"
    return headers


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.rglob("*.json")), ids=lambda path: path.name.removesuffix(".json")
)
def test_rows_equal_validated_rows_and_serialise_cleanly(path: Path) -> None:
    raw_body = path.read_bytes()
    headers = _headers_for(path)
    rows = to_inbox_events(parse_webhook_request(raw_body, headers), raw_body, headers)

    assert rows
    for row in rows:
        validated = NewInboxEvent.model_validate(row.model_dump())
        assert row == validated
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a type mismatch would only warn when serialising
            assert orjson.loads(row.model_dump_json()) == validated.model_dump(mode="json")
        assert row.model_dump(mode="json") == validated.model_dump(mode="json")


def test_keys_without_an_idempotency_header_come_from_the_body() -> None:
    path = FIXTURES / "v2" / "message.received.batch.json"
    raw_body = path.read_bytes()
    headers = {k: v for k, v in _headers_for(path).items() if k != "x-idempotency-key"}

    rows = to_inbox_events(parse_webhook_request(raw_body, headers), raw_body, headers)

    assert len(rows) > 1
    assert len({row.idempotency_key for row in rows}) == len(rows)
    assert all(row.idempotency_key.startswith("sha256:") for row in rows)


def _signed(raw_body: bytes, headers: dict[str, str]) -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), raw_body, hashlib.sha256).hexdigest()
    return {**headers, "X-Webhook-Signature": signature}


async def test_header_names_in_any_case_are_read(stores: Stores) -> None:
    recorded: list[str] = []
    ingest = WebhookIngestService(
        stores.inbox, secret=SecretStr(SECRET), on_recorded=lambda: recorded.append("new")
    )
    batch = orjson.loads((FIXTURES / "v2" / "message.received.batch.json").read_bytes())
    # Only the headers say "batch" and name the event: the body has neither flag nor type.
    raw_body = orjson.dumps({"data": batch["data"][:1]})
    # Kapso's own spelling, in a plain (case-sensitive) dict.
    headers = _signed(
        raw_body,
        {
            "X-Webhook-Event": "whatsapp.message.received",
            "X-WEBHOOK-PAYLOAD-VERSION": "v2",
            "x-Webhook-Batch": "true",
            "X-Idempotency-Key": "delivery-1",
        },
    )

    summary = await ingest.ingest(raw_body, headers)
    again = await ingest.ingest(raw_body, headers)

    (event,) = await stores.inbox.list_inbox_events(InboxState.PENDING, limit=10)
    assert (summary.received, summary.accepted, summary.duplicates) == (1, 1, 0)
    assert (again.received, again.accepted, again.duplicates) == (1, 0, 1)
    # Workers are woken for the new event only, not for the duplicate.
    assert recorded == ["new"]
    assert event.idempotency_key == "delivery-1:0"
    assert event.event == "whatsapp.message.received"
    assert event.payload["payload_version"] == "v2"


async def test_unsigned_or_malformed_deliveries_are_refused(stores: Stores) -> None:
    ingest = WebhookIngestService(stores.inbox, secret=SecretStr(SECRET))
    raw_body = (FIXTURES / "v2" / "message.received.text.json").read_bytes()
    headers = {"X-Webhook-Event": "whatsapp.message.received"}

    with pytest.raises(InvalidWebhookSignatureError):
        await ingest.ingest(raw_body, {**headers, "X-Webhook-Signature": "0" * 64})
    with pytest.raises(BadRequestError):
        await ingest.ingest(b"[1]", _signed(b"[1]", headers))
    assert await stores.inbox.list_inbox_events(InboxState.PENDING, limit=10) == []


async def test_a_store_failure_is_a_503_so_kapso_retries(database_url: str) -> None:
    database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=1))
    await database.aclose()  # the database is gone
    woken: list[str] = []
    ingest = WebhookIngestService(
        InboxStore(database), secret=SecretStr(SECRET), on_recorded=lambda: woken.append("x")
    )
    raw_body = (FIXTURES / "v2" / "message.received.text.json").read_bytes()
    headers = _signed(raw_body, {"X-Webhook-Event": "whatsapp.message.received"})
    with pytest.raises(ServiceUnavailableError) as raised:
        await ingest.ingest(raw_body, headers)
    assert raised.value.code == "store_unavailable"
    assert woken == []


def _signature_checker(secret: str) -> WebhookIngestService:
    # The signature check never reaches the store.
    return WebhookIngestService(cast(InboxStore, None), secret=SecretStr(secret))


def _accepts(service: WebhookIngestService, raw_body: bytes, signature: str | None) -> bool:
    headers = {} if signature is None else {"x-webhook-signature": signature}
    try:
        service._check_signature(raw_body, headers)
    except InvalidWebhookSignatureError:
        return False
    return True


@pytest.mark.parametrize(
    ("form", "accepted"),
    [
        (lambda hexdigest: hexdigest, True),
        (lambda hexdigest: hexdigest.upper(), True),
        (lambda hexdigest: f"sha256={hexdigest}", True),
        (lambda hexdigest: f"  SHA256={hexdigest} ", True),
        (lambda hexdigest: hexdigest[:-1] + ("0" if hexdigest[-1] != "0" else "1"), False),
        (lambda hexdigest: hexdigest[:-1], False),
        (lambda hexdigest: hexdigest[:-1] + "é", False),
        (lambda hexdigest: "", False),
    ],
)
def test_signature_forms(form: Callable[[str], str], accepted: bool) -> None:
    raw_body = b'{"message": {}}'
    hexdigest = hmac.new(SECRET.encode(), raw_body, hashlib.sha256).hexdigest()

    assert _accepts(_signature_checker(SECRET), raw_body, form(hexdigest)) is accepted
    assert _accepts(_signature_checker(SECRET), raw_body, None) is False


@given(
    raw_body=st.binary(max_size=64),
    secret=st.text(min_size=1, max_size=16),
    signature=st.one_of(st.none(), st.text(max_size=80), st.sampled_from(["own", "OWN", "pre"])),
)
def test_signature_check_accepts_exactly_the_hmac_in_its_tolerated_forms(
    raw_body: bytes, secret: str, signature: str | None
) -> None:
    if signature in {"own", "OWN", "pre"}:
        try:
            own = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
        except UnicodeEncodeError:
            own = "0" * 64
        signature = {"own": own, "OWN": own.upper(), "pre": f"sha256={own}"}[signature]

    expected = _reference_check(raw_body, signature, secret)

    assert verify_signature(raw_body, signature, secret) is expected
    assert _accepts(_signature_checker(secret), raw_body, signature) is expected


def _reference_check(raw_body: bytes, signature: str | None, secret: str) -> bool:
    """The rule, written plainly: the body's HMAC-SHA256 in hex, any case, `sha256=` allowed."""
    if signature is None:
        return False
    text = signature.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:]
    try:
        digest = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    except UnicodeEncodeError:
        return False
    return text.isascii() and text.lower() == digest
