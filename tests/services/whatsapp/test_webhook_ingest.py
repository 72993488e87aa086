"""Inbox rows built from deliveries: not validated on the hot path, yet what validation gives."""

from __future__ import annotations

import warnings
from pathlib import Path

import orjson
import pytest

from app.integrations.kapso.api.webhooks import parse_webhook_request
from app.repositories.models import NewInboxEvent
from app.services.whatsapp.webhook_ingest import to_inbox_events

FIXTURES = Path(__file__).parents[2] / "integrations" / "kapso" / "fixtures" / "kapso-webhooks"


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
