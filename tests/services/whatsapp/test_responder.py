"""The default responder answers in Spanish; texts are overridable from a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import ValidationError

from app.services.whatsapp.responder import AcknowledgementResponder, Attachment, ResponderRequest
from app.services.whatsapp.texts import WhatsAppTexts


def request(**overrides: object) -> ResponderRequest:
    fields: dict[str, object] = {
        "user_id": uuid4(),
        "company_id": uuid4(),
        "conversation_id": uuid4(),
        "text": "Hola",
        **overrides,
    }
    return ResponderRequest.model_validate(fields)


async def test_text_gets_an_acknowledgement_with_the_first_name() -> None:
    reply = await AcknowledgementResponder().reply(request(contact_name="María González"))
    assert reply == "¡Hola, María! Recibimos tu mensaje. Te responderemos por aquí a la brevedad."


async def test_without_a_name_the_greeting_is_plain() -> None:
    reply = await AcknowledgementResponder().reply(request(contact_name="  "))
    assert reply.startswith("¡Hola! ")


async def test_media_says_the_file_was_received() -> None:
    reply = await AcknowledgementResponder().reply(
        request(
            text="Boleta",
            attachments=(
                Attachment(kind="image", filename="boleta.jpg"),
                Attachment(kind="document"),
                Attachment(kind="location"),
            ),
        )
    )
    assert "imagen «boleta.jpg», documento, archivo" in reply


def test_texts_load_overrides_from_json(tmp_path: Path) -> None:
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"greeting": "¡Buenas!"}), encoding="utf-8")
    texts = WhatsAppTexts.load(path)
    assert texts.greet(None) == "¡Buenas!"
    assert texts.acknowledgement == WhatsAppTexts().acknowledgement


def test_texts_reject_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"greting": "typo"}), encoding="utf-8")
    with pytest.raises(ValidationError):
        WhatsAppTexts.load(path)
