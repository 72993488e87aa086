"""Meta-proxy sends: every type the client supports, shapes and WhatsApp's limits."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PHONE_NUMBER_ID, USER_WA_ID, RunningEmulator

pytestmark = pytest.mark.timeout(30)


def _send_body(msg_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER_WA_ID,
        "type": msg_type,
        msg_type: obj,
    }


async def _upload(kapso: RunningEmulator, data: bytes, mime: str, name: str) -> str:
    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/media"),
        data={"messaging_product": "whatsapp", "type": mime},
        files={"file": (name, data, mime)},
    )
    assert response.status_code == 200, response.text
    media_id: str = response.json()["id"]
    return media_id


async def test_text_send_answers_like_meta_and_is_recorded(kapso: RunningEmulator) -> None:
    await kapso.inbound(text="Hola")

    response = await kapso.send_text("¿En qué te ayudo?", biz_opaque_callback_data="out_1")

    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": USER_WA_ID, "wa_id": USER_WA_ID}]
    assert body["messages"][0]["id"].startswith("wamid.")
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert [e["content"] for e in outbox] == ["¿En qué te ayudo?"]
    assert outbox[0]["request"]["biz_opaque_callback_data"] == "out_1"
    conversations = (await kapso.client.get("/platform/v1/whatsapp/conversations")).json()
    assert conversations["data"][0]["kapso"]["messages_count"] == 2


@pytest.mark.parametrize(
    ("msg_type", "obj"),
    [
        ("image", {"link": "https://example.com/a.jpg", "caption": "Boleta"}),
        ("video", {"link": "https://example.com/a.mp4"}),
        ("audio", {"link": "https://example.com/a.ogg"}),
        ("document", {"link": "https://example.com/a.pdf", "filename": "f29.pdf"}),
        ("sticker", {"link": "https://example.com/a.webp"}),
        (
            "interactive",
            {
                "type": "button",
                "header": {"type": "text", "text": "Fizko"},
                "body": {"text": "¿Qué necesitas?"},
                "footer": {"text": "Elige una opción"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "iva", "title": "IVA"}},
                        {"type": "reply", "reply": {"id": "f29", "title": "F29"}},
                    ]
                },
            },
        ),
        (
            "interactive",
            {
                "type": "list",
                "body": {"text": "Elige un mes"},
                "action": {
                    "button": "Meses",
                    "sections": [
                        {
                            "title": "2025",
                            "rows": [{"id": "11", "title": "Noviembre", "description": "F29"}],
                        }
                    ],
                },
            },
        ),
        (
            "interactive",
            {
                "type": "cta_url",
                "body": {"text": "Revisa tu declaración"},
                "action": {
                    "name": "cta_url",
                    "parameters": {"display_text": "Abrir", "url": "https://fizko.ai"},
                },
            },
        ),
    ],
)
async def test_every_message_type_is_accepted(
    kapso: RunningEmulator, msg_type: str, obj: dict[str, Any]
) -> None:
    await kapso.inbound()

    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"), json=_send_body(msg_type, obj)
    )

    assert response.status_code == 200, response.text
    assert response.json()["messages"][0]["id"].startswith("wamid.")


async def test_media_by_id_and_reaction(kapso: RunningEmulator) -> None:
    inbound = await kapso.inbound()
    media_id = await _upload(kapso, b"\x89PNG fake", "image/png", "a.png")

    by_id = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"), json=_send_body("image", {"id": media_id})
    )
    reaction = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json=_send_body("reaction", {"message_id": inbound["message"]["id"], "emoji": "👍"}),
    )

    assert by_id.status_code == 200, by_id.text
    assert reaction.status_code == 200, reaction.text


async def test_mark_as_read_with_typing_indicator(kapso: RunningEmulator) -> None:
    inbound = await kapso.inbound()

    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json={
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": inbound["message"]["id"],
            "typing_indicator": {"type": "text"},
        },
    )

    assert response.status_code == 200
    assert response.json() == {"success": True}
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert outbox[0]["kind"] == "read+typing"
    chat = (await kapso.client.get("/_emulator/chat")).json()
    assert chat["conversations"][0]["typing"] is True


def _button(title: str = "Sí", button_id: str = "yes") -> dict[str, Any]:
    return {"type": "reply", "reply": {"id": button_id, "title": title}}


def _buttons(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": "button", "body": {"text": "¿Confirmas?"}, "action": {"buttons": list(buttons)}}


def _list(rows: int, sections: int = 1, **row: Any) -> dict[str, Any]:
    return {
        "type": "list",
        "body": {"text": "Elige"},
        "action": {
            "button": "Ver",
            "sections": [
                {
                    "title": f"S{s}",
                    "rows": [{"id": f"{s}-{r}", "title": f"Row {r}", **row} for r in range(rows)],
                }
                for s in range(sections)
            ],
        },
    }


@pytest.mark.parametrize(
    ("msg_type", "obj"),
    [
        ("text", {"body": "x" * 4097}),
        ("text", {"body": ""}),
        ("image", {"link": "https://example.com/a.jpg", "caption": "c" * 1025}),
        ("image", {}),
        ("interactive", _buttons()),
        ("interactive", {**_buttons(_button()), "action": {"buttons": []}}),
        ("interactive", _buttons(*[_button(button_id=str(i)) for i in range(4)])),
        ("interactive", _buttons(_button(title="t" * 21))),
        ("interactive", _buttons(_button(button_id="i" * 257))),
        ("interactive", {**_buttons(_button()), "body": {"text": "b" * 1025}}),
        ("interactive", {**_buttons(_button()), "header": {"type": "text", "text": "h" * 61}}),
        ("interactive", {**_buttons(_button()), "footer": {"text": "f" * 61}}),
        ("interactive", _list(rows=11)),
        ("interactive", _list(rows=6, sections=2)),
        ("interactive", _list(rows=1, sections=11)),
        ("interactive", _list(rows=1, title="t" * 25)),
        ("interactive", _list(rows=1, description="d" * 73)),
        ("image", {"id": "999999"}),
    ],
)
async def test_limits_answer_with_the_graph_error_envelope(
    kapso: RunningEmulator, msg_type: str, obj: dict[str, Any]
) -> None:
    await kapso.inbound()

    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"), json=_send_body(msg_type, obj)
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 100
    assert error["type"] == "OAuthException"
    assert {"message", "fbtrace_id"} <= set(error)
    assert (await kapso.client.get("/_emulator/outbox")).json()["data"] == []


async def test_limits_count_code_points_not_bytes(kapso: RunningEmulator) -> None:
    await kapso.inbound()

    response = await kapso.send_text("ñ" * 4096)

    assert response.status_code == 200


async def test_unknown_phone_number_id_is_a_graph_error(kapso: RunningEmulator) -> None:
    response = await kapso.client.post(
        kapso.proxy("000/messages"), json=_send_body("text", {"body": "hola"})
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100
