"""Settling an unknown send from Kapso's history never takes another message for ours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from app.integrations.kapso.models import MessageRecord
from app.repositories.models import OutboundMessage, OutboundStatus
from app.services.whatsapp.outbound import _is_our_message

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def row() -> OutboundMessage:
    return OutboundMessage(
        id=uuid4(),
        to_phone="+56912345678",
        message_type="text",
        purpose="reply",
        status=OutboundStatus.UNKNOWN,
        created_at=NOW,
        updated_at=NOW,
    )


def record(**kapso: Any) -> MessageRecord:
    return MessageRecord.model_validate(
        {"id": "wamid.X", "to": kapso.pop("to", "56912345678"), "kapso": kapso}
    )


def test_our_callback_id_decides_whatever_the_text() -> None:
    mine = row()
    statuses = [{"status": "sent", "biz_opaque_callback_data": str(mine.id)}]
    assert _is_our_message(record(content="otro texto", statuses=statuses), mine, "Hola")


def test_another_messages_callback_id_is_not_ours_even_with_the_same_text() -> None:
    statuses = [{"status": "sent", "biz_opaque_callback_data": str(uuid4())}]
    assert not _is_our_message(record(content="Hola", statuses=statuses), row(), "Hola")


def test_without_callback_data_text_and_recipient_must_both_match() -> None:
    assert _is_our_message(record(content="Hola"), row(), "Hola")
    assert not _is_our_message(record(content="Hola", to="56987654321"), row(), "Hola")
    assert not _is_our_message(record(content="Chao"), row(), "Hola")


def test_a_record_without_a_recipient_matches_nothing() -> None:
    assert not _is_our_message(record(content="Hola", to=""), row(), "Hola")
