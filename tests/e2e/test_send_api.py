"""The send API end to end: what the emulator received, what is stored, scoping
to the caller's companies, the 24-hour window, WhatsApp's limits, idempotency, rate limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from app.repositories.models import MessageRole, OutboundStatus
from support.e2e import (
    PHONE_NUMBER_ID,
    SEND_API,
    LocalFlow,
    add_member,
    api_sends,
    assert_error,
    bearer,
    create_template,
    local_flow,
    open_window,
)
from support.store_data import make_member, unique_phone

pytestmark = pytest.mark.timeout(120)

OUTSIDE_WINDOW = "outside_customer_service_window"


def digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def spaced(phone: str) -> str:
    """`+56912345678` as people write it: `+56 9 1234 5678`."""
    d = digits(phone)
    return f"+{d[:2]} {d[2]} {d[3:7]} {d[7:]}"


async def age_user_messages(flow: LocalFlow, conversation_id: uuid.UUID, hours: int) -> None:
    """Move the user's messages of a conversation `hours` into the past, in the database itself."""
    await flow.stores.database.execute(
        """update public.messages set created_at = created_at - make_interval(hours => $1)
            where conversation_id = $2 and role = 'user'""",
        hours,
        conversation_id,
    )


# --- Happy paths: what the emulator received, what is stored ---------------------------------


async def test_text_by_conversation_id_is_sent_and_stored_in_the_conversation(
    flow: LocalFlow,
) -> None:
    profile, company = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)

    response = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"conversation_id": conversation_id}, "content": "Hola 👋"},
        headers=bearer(profile.id),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["message_id"].startswith("wamid.")
    assert body["conversation_id"] == conversation_id
    assert body["status"] == "sent"
    [sent] = await api_sends(flow, profile.phone, expected=1)
    assert sent["message_id"] == body["message_id"]
    request = sent["request"]
    assert request["to"] == digits(profile.phone)
    assert request["type"] == "text"
    assert request["text"] == {"body": "Hola 👋"}
    outbound_id = uuid.UUID(request["biz_opaque_callback_data"])

    listed = await flow.service.get(
        f"/api/whatsapp/conversations/{conversation_id}/messages", headers=bearer(profile.id)
    )
    assert listed.status_code == 200, listed.text
    last = listed.json()["data"][-1]
    assert last["role"] == "assistant"
    assert last["content"] == "Hola 👋"
    assert last["message_id"] == body["message_id"]
    assert last["manual"] is False

    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    stored = (await flow.stores.conversations.list_messages(conversation.id))[-1]
    assert stored.role is MessageRole.ASSISTANT
    assert stored.content == "Hola 👋"
    assert stored.metadata.whatsapp_message_id == body["message_id"]
    assert stored.metadata.sender_user_id == profile.id
    assert stored.metadata.outbound_id == outbound_id
    outbound = await flow.stores.outbound.get_outbound(outbound_id)
    assert outbound is not None
    assert outbound.wamid == body["message_id"]
    assert outbound.purpose == "api"
    assert outbound.user_id == profile.id
    assert outbound.company_id == company.id
    assert outbound.conversation_id == conversation.id
    assert outbound.status in (OutboundStatus.SENT, OutboundStatus.DELIVERED, OutboundStatus.READ)


@pytest.mark.parametrize("written", [spaced, digits], ids=["spaced", "digits-only"])
async def test_text_by_phone_in_any_format_reaches_that_numbers_conversation(
    flow: LocalFlow, written: Callable[[str], str]
) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)

    response = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"phone_number": written(profile.phone)}, "content": "Ok"},
        headers=bearer(profile.id),
    )

    assert response.status_code == 200, response.text
    assert response.json()["conversation_id"] == conversation_id
    [sent] = await api_sends(flow, profile.phone, expected=1)
    assert sent["request"]["to"] == digits(profile.phone)
    assert sent["request"]["text"] == {"body": "Ok"}
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    stored = await flow.stores.conversations.latest_message(
        conversation.id, role=MessageRole.ASSISTANT
    )
    assert stored is not None
    assert stored.metadata.whatsapp_message_id == response.json()["message_id"]


async def test_media_image_with_caption_and_document_with_filename(flow: LocalFlow) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    selector = {"conversation_id": conversation_id}

    image = await flow.service.post(
        f"{SEND_API}/media",
        json={
            "conversation_selector": selector,
            "message_type": "image",
            "file_url": "https://files.fizko.test/grafico.png",
            "caption": "Tu resumen de ventas",
        },
        headers=bearer(profile.id),
    )
    document = await flow.service.post(
        f"{SEND_API}/media",
        json={
            "conversation_selector": selector,
            "message_type": "document",
            "file_url": "https://files.fizko.test/f29.pdf",
            "filename": "F29-mayo.pdf",
        },
        headers=bearer(profile.id),
    )

    assert image.status_code == 200, image.text
    assert document.status_code == 200, document.text
    sent_image, sent_document = await api_sends(flow, profile.phone, expected=2)
    assert sent_image["message_id"] == image.json()["message_id"]
    assert sent_image["request"]["type"] == "image"
    assert sent_image["request"]["image"] == {
        "link": "https://files.fizko.test/grafico.png",
        "caption": "Tu resumen de ventas",
    }
    assert sent_document["message_id"] == document.json()["message_id"]
    assert sent_document["request"]["type"] == "document"
    assert sent_document["request"]["document"] == {
        "link": "https://files.fizko.test/f29.pdf",
        "filename": "F29-mayo.pdf",
    }
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    stored = (await flow.stores.conversations.list_messages(conversation.id))[-2:]
    assert [(m.content, m.metadata.message_type) for m in stored] == [
        ("Tu resumen de ventas", "image"),
        ("[document: F29-mayo.pdf]", "document"),
    ]
    assert all(m.metadata.sender_user_id == profile.id for m in stored)


async def test_interactive_buttons_and_list(flow: LocalFlow) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    selector = {"conversation_id": conversation_id}

    buttons = await flow.service.post(
        f"{SEND_API}/interactive",
        json={
            "conversation_selector": selector,
            "interactive_type": "button",
            "header_text": "IVA de mayo",
            "body_text": "¿Declaramos el F29?",
            "footer_text": "Fizko",
            "buttons": [{"id": "si", "title": "Sí"}, {"id": "no", "title": "Todavía no"}],
        },
        headers=bearer(profile.id),
    )
    listing = await flow.service.post(
        f"{SEND_API}/interactive",
        json={
            "conversation_selector": selector,
            "interactive_type": "list",
            "body_text": "¿Qué quieres revisar?",
            "list_button_text": "Ver opciones",
            "sections": [
                {"title": "Impuestos", "rows": [{"id": "iva", "title": "IVA", "description": "F"}]},
                {"title": "Ventas", "rows": [{"id": "ventas", "title": "Ventas del mes"}]},
            ],
        },
        headers=bearer(profile.id),
    )

    assert buttons.status_code == 200, buttons.text
    assert listing.status_code == 200, listing.text
    sent_buttons, sent_list = await api_sends(flow, profile.phone, expected=2)
    assert sent_buttons["message_id"] == buttons.json()["message_id"]
    assert sent_buttons["request"]["interactive"] == {
        "type": "button",
        "header": {"type": "text", "text": "IVA de mayo"},
        "body": {"text": "¿Declaramos el F29?"},
        "footer": {"text": "Fizko"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "si", "title": "Sí"}},
                {"type": "reply", "reply": {"id": "no", "title": "Todavía no"}},
            ]
        },
    }
    assert sent_list["message_id"] == listing.json()["message_id"]
    assert sent_list["request"]["interactive"] == {
        "type": "list",
        "body": {"text": "¿Qué quieres revisar?"},
        "action": {
            "button": "Ver opciones",
            "sections": [
                {"title": "Impuestos", "rows": [{"id": "iva", "title": "IVA", "description": "F"}]},
                {"title": "Ventas", "rows": [{"id": "ventas", "title": "Ventas del mes"}]},
            ],
        },
    }
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    stored = (await flow.stores.conversations.list_messages(conversation.id))[-2:]
    assert [m.content for m in stored] == ["¿Declaramos el F29?", "¿Qué quieres revisar?"]
    assert [m.metadata.message_type for m in stored] == ["interactive", "interactive"]


async def test_templates_by_phone_number_with_named_and_positional_parameters(
    flow: LocalFlow,
) -> None:
    accountant, company = await make_member(flow.seeder)
    client = await add_member(flow.seeder, company)
    assert client.phone is not None
    await create_template(
        flow,
        "codigo_verificacion",
        "Hola {{nombre}}, tu código es {{codigo}}",
        parameter_format="NAMED",
    )
    await create_template(flow, "vencimiento_f29", "Hola {{1}}, tu F29 vence el {{2}}")
    bodies: list[dict[str, Any]] = [
        {
            "phone_number": spaced(client.phone),
            "template_name": "codigo_verificacion",
            "language_code": "es",
            "parameters": {"body": {"nombre": "María", "codigo": "123456"}},
        },
        {
            "phone_number": client.phone,
            "template_name": "vencimiento_f29",
            "language_code": "es",
            "parameters": {"body": ["María", "20 de mayo"]},
        },
        {"phone_number": client.phone, "template_name": "hello_world", "language_code": "en_US"},
    ]

    responses = [
        await flow.service.post(f"{SEND_API}/template", json=body, headers=bearer(accountant.id))
        for body in bodies
    ]

    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["conversation_id"] is None
        assert response.json()["status"] == "sent"
    named, positional, hello = await flow.outbox(client.phone, wait_count=3)
    assert [e["message_id"] for e in (named, positional, hello)] == [
        r.json()["message_id"] for r in responses
    ]
    assert named["request"]["to"] == digits(client.phone)
    assert named["request"]["template"] == {
        "name": "codigo_verificacion",
        "language": {"code": "es"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "María", "parameter_name": "nombre"},
                    {"type": "text", "text": "123456", "parameter_name": "codigo"},
                ],
            }
        ],
    }
    assert named["content"] == "Hola María, tu código es 123456"
    assert positional["request"]["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "María"},
                {"type": "text", "text": "20 de mayo"},
            ],
        }
    ]
    assert positional["content"] == "Hola María, tu F29 vence el 20 de mayo"
    assert hello["request"]["template"] == {"name": "hello_world", "language": {"code": "en_US"}}
    outbound = await flow.stores.outbound.find_outbound_by_wamid(responses[0].json()["message_id"])
    assert outbound is not None
    assert outbound.message_type == "template"
    assert outbound.conversation_id is None
    assert outbound.company_id == company.id
    assert outbound.user_id == accountant.id


# --- Inbox views -------------------------------------------------------------------------------


async def test_conversations_list_only_the_callers_company_and_paginates(flow: LocalFlow) -> None:
    accountant, company = await make_member(flow.seeder)
    ours: set[str] = set()
    for _ in range(3):
        member = await add_member(flow.seeder, company)
        assert member.phone is not None
        ours.add(await open_window(flow, member.phone))
    stranger, _ = await make_member(flow.seeder, company_name="Otra SpA")
    assert stranger.phone is not None
    theirs = await open_window(flow, stranger.phone)

    everything = await flow.service.get(
        "/api/whatsapp/conversations", headers=bearer(accountant.id)
    )
    first = await flow.service.get(
        "/api/whatsapp/conversations",
        params={"limit": 2, "offset": 0},
        headers=bearer(accountant.id),
    )
    rest = await flow.service.get(
        "/api/whatsapp/conversations",
        params={"limit": 2, "offset": 2},
        headers=bearer(accountant.id),
    )

    assert everything.status_code == 200, everything.text
    listed = [c["conversation_id"] for c in everything.json()["data"]]
    assert set(listed) == ours
    assert theirs not in listed
    assert all(c["company_id"] == str(company.id) for c in everything.json()["data"])
    assert first.json()["limit"] == 2
    assert first.json()["offset"] == 0
    assert rest.json()["offset"] == 2
    pages = [c["conversation_id"] for c in first.json()["data"] + rest.json()["data"]]
    assert pages == listed
    assert len(first.json()["data"]) == 2
    assert len(rest.json()["data"]) == 1


async def test_messages_of_another_companys_conversation_are_404_like_a_missing_one(
    flow: LocalFlow,
) -> None:
    user, _ = await make_member(flow.seeder)
    stranger, _ = await make_member(flow.seeder, company_name="Otra SpA")
    assert stranger.phone is not None
    theirs = await open_window(flow, stranger.phone)

    foreign = await flow.service.get(
        f"/api/whatsapp/conversations/{theirs}/messages", headers=bearer(user.id)
    )
    missing = await flow.service.get(
        f"/api/whatsapp/conversations/{uuid.uuid4()}/messages", headers=bearer(user.id)
    )
    own_view = await flow.service.get(
        f"/api/whatsapp/conversations/{theirs}/messages", headers=bearer(stranger.id)
    )

    assert_error(foreign, 404, "conversation_not_found")
    assert foreign.json() == missing.json()
    assert own_view.status_code == 200, own_view.text
    assert [m["role"] for m in own_view.json()["data"]] == ["user", "assistant"]


# --- Scoping: another company's conversations and numbers do not exist ------------------------


async def test_sending_into_another_companys_conversation_or_number_is_404_without_a_hint(
    flow: LocalFlow,
) -> None:
    user, _ = await make_member(flow.seeder)
    stranger, _ = await make_member(flow.seeder, company_name="Otra SpA")
    assert stranger.phone is not None
    theirs = await open_window(flow, stranger.phone)

    async def send(selector: dict[str, str]) -> Any:
        return await flow.service.post(
            f"{SEND_API}/text",
            json={"conversation_selector": selector, "content": "¿Me lees?"},
            headers=bearer(user.id),
        )

    by_conversation = await send({"conversation_id": theirs})
    by_phone = await send({"phone_number": stranger.phone})
    by_spaced_phone = await send({"phone_number": spaced(stranger.phone)})
    nonexistent_conversation = await send({"conversation_id": str(uuid.uuid4())})
    unknown_phone = await send({"phone_number": unique_phone()})
    template = await flow.service.post(
        f"{SEND_API}/template",
        json={"phone_number": stranger.phone, "template_name": "hello_world"},
        headers=bearer(user.id),
    )

    for response in (by_conversation, by_phone, by_spaced_phone, template):
        assert_error(response, 404, "conversation_not_found")
        assert response.json() == nonexistent_conversation.json()
    assert unknown_phone.json() == nonexistent_conversation.json()
    await flow.drain_deliveries()
    assert await api_sends(flow, stranger.phone, expected=1, wait_seconds=0.5) == []


@pytest.mark.parametrize("name", ["company_id", "user_id"])
async def test_unknown_fields_are_refused_naming_the_field(flow: LocalFlow, name: str) -> None:
    user, _ = await make_member(flow.seeder)
    assert user.phone is not None
    selector = {"phone_number": user.phone}

    top = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": selector, "content": "x", name: str(uuid.uuid4())},
        headers=bearer(user.id),
    )
    nested = await flow.service.post(
        f"{SEND_API}/template",
        json={
            "conversation_selector": {**selector, name: str(uuid.uuid4())},
            "template_name": "hello_world",
        },
        headers=bearer(user.id),
    )

    assert_error(top, 422, "validation_error", field=name)
    assert_error(nested, 422, "validation_error", field=f"conversation_selector.{name}")


async def test_a_selector_without_conversation_id_or_phone_number_is_422(flow: LocalFlow) -> None:
    user, _ = await make_member(flow.seeder)

    text = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {}, "content": "x"},
        headers=bearer(user.id),
    )
    template = await flow.service.post(
        f"{SEND_API}/template", json={"template_name": "hello_world"}, headers=bearer(user.id)
    )

    assert_error(text, 422, "validation_error", field="conversation_selector")
    assert_error(template, 422, "validation_error", field="conversation_selector")


# --- The 24-hour customer-service window -----------------------------------------------------


async def test_outside_the_window_free_form_is_409_and_a_template_then_succeeds(
    flow: LocalFlow,
) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    await age_user_messages(flow, conversation.id, hours=25)
    selector = {"conversation_id": conversation_id}

    text = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": selector, "content": "¿Sigues ahí?"},
        headers=bearer(profile.id),
    )
    media = await flow.service.post(
        f"{SEND_API}/media",
        json={
            "conversation_selector": selector,
            "message_type": "image",
            "file_url": "https://files.fizko.test/a.png",
        },
        headers=bearer(profile.id),
    )
    interactive = await flow.service.post(
        f"{SEND_API}/interactive",
        json={
            "conversation_selector": selector,
            "interactive_type": "button",
            "body_text": "¿Sí?",
            "buttons": [{"id": "si", "title": "Sí"}],
        },
        headers=bearer(profile.id),
    )
    template = await flow.service.post(
        f"{SEND_API}/template",
        json={
            "conversation_selector": selector,
            "template_name": "hello_world",
            "language_code": "en_US",
        },
        headers=bearer(profile.id),
    )

    for refused in (text, media, interactive):
        error = assert_error(refused, 409, OUTSIDE_WINDOW)
        assert "/api/whatsapp/send/template" in error["message"]
    assert template.status_code == 200, template.text
    assert template.json()["conversation_id"] == conversation_id
    [sent] = await api_sends(flow, profile.phone, expected=1)
    assert sent["request"]["type"] == "template"
    assert sent["message_id"] == template.json()["message_id"]
    stored = await flow.stores.conversations.latest_message(
        conversation.id, role=MessageRole.ASSISTANT
    )
    assert stored is not None
    assert stored.content == "[template hello_world]"
    assert stored.metadata.sender_user_id == profile.id


async def test_a_number_that_never_wrote_gets_only_templates(flow: LocalFlow) -> None:
    accountant, company = await make_member(flow.seeder)
    client = await add_member(flow.seeder, company)
    assert client.phone is not None

    text = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"phone_number": client.phone}, "content": "Hola"},
        headers=bearer(accountant.id),
    )
    template = await flow.service.post(
        f"{SEND_API}/template",
        json={
            "phone_number": client.phone,
            "template_name": "hello_world",
            "language_code": "en_US",
        },
        headers=bearer(accountant.id),
    )

    assert_error(text, 409, OUTSIDE_WINDOW)
    assert template.status_code == 200, template.text
    [sent] = await flow.outbox(client.phone, wait_count=1)
    assert sent["request"]["type"] == "template"


# --- WhatsApp's limits, at their boundaries ---------------------------------------------------


def _rows(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "title": f"Fila {i}"} for i in range(count)]


def _list(sections: list[list[dict[str, str]]]) -> dict[str, Any]:
    return {
        "interactive_type": "list",
        "body_text": "Elige",
        "list_button_text": "Ver",
        "sections": [{"title": f"S{i}", "rows": rows} for i, rows in enumerate(sections)],
    }


def _buttons_message(**fields: Any) -> dict[str, Any]:
    return {
        "interactive_type": "button",
        "body_text": "Elige",
        "buttons": [{"id": "a", "title": "Sí"}],
        **fields,
    }


IMAGE_URL = "https://files.fizko.test/a.png"


def _image(caption: str) -> dict[str, Any]:
    return {"message_type": "image", "file_url": IMAGE_URL, "caption": caption}


# (endpoint, body at the limit, body one past it, the field the 422 names)
LIMITS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "text-4096": ("text", {"content": "a" * 4096}, {"content": "a" * 4097}, "content"),
    "buttons-3": (
        "interactive",
        _buttons_message(buttons=[{"id": f"b{i}", "title": f"Opción {i}"} for i in range(3)]),
        _buttons_message(buttons=[{"id": f"b{i}", "title": f"Opción {i}"} for i in range(4)]),
        "buttons",
    ),
    "list-rows-10": (
        "interactive",
        _list([_rows("a", 5), _rows("b", 5)]),
        _list([_rows("a", 5), _rows("b", 6)]),
        "sections",
    ),
    "button-title-20": (
        "interactive",
        _buttons_message(buttons=[{"id": "a", "title": "t" * 20}]),
        _buttons_message(buttons=[{"id": "a", "title": "t" * 21}]),
        "buttons.0.title",
    ),
    "header-60": (
        "interactive",
        _buttons_message(header_text="h" * 60),
        _buttons_message(header_text="h" * 61),
        "header_text",
    ),
    "footer-60": (
        "interactive",
        _buttons_message(footer_text="f" * 60),
        _buttons_message(footer_text="f" * 61),
        "footer_text",
    ),
    "caption-1024": ("media", _image("c" * 1024), _image("c" * 1025), "caption"),
}


@pytest.mark.parametrize("case", list(LIMITS))
async def test_each_limit_at_its_boundary(flow: LocalFlow, case: str) -> None:
    endpoint, at_limit, past_limit, field = LIMITS[case]
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    selector = {"conversation_selector": {"conversation_id": conversation_id}}

    ok = await flow.service.post(
        f"{SEND_API}/{endpoint}", json={**selector, **at_limit}, headers=bearer(profile.id)
    )
    too_much = await flow.service.post(
        f"{SEND_API}/{endpoint}", json={**selector, **past_limit}, headers=bearer(profile.id)
    )

    assert ok.status_code == 200, ok.text
    assert_error(too_much, 422, "validation_error", field=field)
    await flow.drain_deliveries()
    [sent] = await api_sends(flow, profile.phone, expected=2, wait_seconds=0.5)
    assert sent["message_id"] == ok.json()["message_id"]


# --- Idempotency-Key ----------------------------------------------------------------------------


async def test_the_same_key_and_body_replays_the_first_result_without_sending_again(
    flow: LocalFlow,
) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "Una vez"}
    headers = {**bearer(profile.id), "Idempotency-Key": "pago-iva-mayo"}

    first = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
    again = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
    changed = await flow.service.post(
        f"{SEND_API}/text", json={**body, "content": "Otra cosa"}, headers=headers
    )

    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert_error(changed, 409, "idempotency_key_reused")
    await flow.drain_deliveries()
    sent = await api_sends(flow, profile.phone, expected=2, wait_seconds=0.5)
    assert [entry["message_id"] for entry in sent] == [first.json()["message_id"]]
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    stored = await flow.stores.conversations.list_messages(conversation.id)
    assert [m.content for m in stored].count("Una vez") == 1


async def test_two_users_may_use_the_same_key_independently(flow: LocalFlow) -> None:
    ana, company = await make_member(flow.seeder)
    pedro = await add_member(flow.seeder, company)
    assert ana.phone is not None
    conversation_id = await open_window(flow, ana.phone)
    body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "Hola"}

    by_ana = await flow.service.post(
        f"{SEND_API}/text", json=body, headers={**bearer(ana.id), "Idempotency-Key": "k-1"}
    )
    by_pedro = await flow.service.post(
        f"{SEND_API}/text", json=body, headers={**bearer(pedro.id), "Idempotency-Key": "k-1"}
    )

    assert by_ana.status_code == 200, by_ana.text
    assert by_pedro.status_code == 200, by_pedro.text
    assert by_ana.json()["message_id"] != by_pedro.json()["message_id"]
    sent = await api_sends(flow, ana.phone, expected=2)
    assert len(sent) == 2


async def test_concurrent_identical_requests_with_one_key_send_once(flow: LocalFlow) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "Solo una"}
    headers = {**bearer(profile.id), "Idempotency-Key": f"concurrent-{uuid.uuid4()}"}

    responses = await asyncio.gather(
        *(flow.service.post(f"{SEND_API}/text", json=body, headers=headers) for _ in range(6))
    )

    succeeded = [r for r in responses if r.status_code == 200]
    assert succeeded, [r.text for r in responses]
    assert len({r.json()["message_id"] for r in succeeded}) == 1
    for response in responses:
        if response.status_code != 200:
            # The first request was still sending: the others are told so, and nothing more.
            assert_error(response, 409, "request_in_progress")
    after = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
    assert after.json() == succeeded[0].json()
    await flow.drain_deliveries()
    sent = await api_sends(flow, profile.phone, expected=2, wait_seconds=0.5)
    assert [entry["message_id"] for entry in sent] == [succeeded[0].json()["message_id"]]


# --- Rate limit ---------------------------------------------------------------------------------


async def test_the_fourth_send_in_a_minute_is_429_for_that_user_only(database_url: str) -> None:
    async with local_flow(database_url, send_rate_limit_per_minute=3) as flow:
        ana, _ = await make_member(flow.seeder)
        pedro, _ = await make_member(flow.seeder, company_name="Otra SpA")
        assert ana.phone is not None
        assert pedro.phone is not None
        ana_conversation = await open_window(flow, ana.phone)
        pedro_conversation = await open_window(flow, pedro.phone)

        async def send(user_id: uuid.UUID, conversation_id: str, content: str) -> Any:
            return await flow.service.post(
                f"{SEND_API}/text",
                json={
                    "conversation_selector": {"conversation_id": conversation_id},
                    "content": content,
                },
                headers=bearer(user_id),
            )

        allowed = [await send(ana.id, ana_conversation, f"Mensaje {i}") for i in range(3)]
        fourth = await send(ana.id, ana_conversation, "Mensaje 3")
        other_user = await send(pedro.id, pedro_conversation, "Hola")

        assert [r.status_code for r in allowed] == [200, 200, 200]
        assert_error(fourth, 429, "rate_limited")
        assert 1 <= int(fourth.headers["Retry-After"]) <= 60
        assert other_user.status_code == 200, other_user.text
        await flow.drain_deliveries()
        assert len(await api_sends(flow, ana.phone, expected=4, wait_seconds=0.5)) == 3


# --- The one error shape, and inputs at the edge of what the stores hold -----------------------


async def test_every_error_of_the_api_has_the_one_shape(flow: LocalFlow) -> None:
    user, _ = await make_member(flow.seeder)
    assert user.phone is not None
    json_headers = {**bearer(user.id), "Content-Type": "application/json"}
    text = f"{SEND_API}/text"

    cases = {
        "not-json": await flow.service.post(text, content=b"{nope", headers=json_headers),
        "not-utf8": await flow.service.post(
            text, content=b'{"content": "\x80"}', headers=json_headers
        ),
        "json-array": await flow.service.post(text, json=[1, 2], headers=bearer(user.id)),
        "long-key": await flow.service.post(
            text,
            json={"conversation_selector": {"phone_number": user.phone}, "content": "x"},
            headers={**bearer(user.id), "Idempotency-Key": "k" * 256},
        ),
        "bad-limit": await flow.service.get(
            "/api/whatsapp/conversations", params={"limit": 0}, headers=bearer(user.id)
        ),
        "unknown-path": await flow.service.get("/api/whatsapp/nothing", headers=bearer(user.id)),
        "wrong-method": await flow.service.get(text, headers=bearer(user.id)),
    }

    assert_error(cases["not-json"], 400, "malformed_json")
    assert_error(cases["not-utf8"], 400, "bad_request")
    assert_error(cases["json-array"], 422, "validation_error")
    assert_error(cases["long-key"], 422, "validation_error", field="header.Idempotency-Key")
    assert_error(cases["bad-limit"], 422, "validation_error", field="query.limit")
    assert_error(cases["unknown-path"], 404, "not_found")
    assert_error(cases["wrong-method"], 405, "method_not_allowed")
    assert cases["wrong-method"].headers["Allow"] == "POST"


async def test_a_huge_offset_is_a_422_not_a_500(flow: LocalFlow) -> None:
    user, _ = await make_member(flow.seeder)
    assert user.phone is not None
    conversation_id = await open_window(flow, user.phone)
    listings = [
        "/api/whatsapp/conversations",
        f"/api/whatsapp/conversations/{conversation_id}/messages",
    ]

    for path in listings:
        far = await flow.service.get(path, params={"offset": 10**6}, headers=bearer(user.id))
        huge = await flow.service.get(path, params={"offset": 10**30}, headers=bearer(user.id))

        assert far.status_code == 200, far.text
        assert far.json()["data"] == []
        assert_error(huge, 422, "validation_error", field="query.offset")


@pytest.mark.parametrize(
    "config_id", ["\x07", "1029384756/../../other", "1029384756\n", "a b", "x" * 65], ids=repr
)
async def test_a_whatsapp_config_id_that_is_no_id_is_422_and_never_reaches_kapso(
    flow: LocalFlow, config_id: str
) -> None:
    # It becomes a path segment of Kapso's URL: a slash or a control character must not pass.
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)

    response = await flow.service.post(
        f"{SEND_API}/text",
        json={
            "conversation_selector": {"conversation_id": conversation_id},
            "content": "Hola",
            "whatsapp_config_id": config_id,
        },
        headers=bearer(profile.id),
    )

    assert_error(response, 422, "validation_error", field="whatsapp_config_id")
    await flow.drain_deliveries()
    assert await api_sends(flow, profile.phone, expected=1, wait_seconds=0.3) == []


async def test_the_default_business_number_may_be_named_explicitly(flow: LocalFlow) -> None:
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)

    response = await flow.service.post(
        f"{SEND_API}/text",
        json={
            "conversation_selector": {"conversation_id": conversation_id},
            "content": "Hola",
            "whatsapp_config_id": PHONE_NUMBER_ID,
        },
        headers=bearer(profile.id),
    )

    assert response.status_code == 200, response.text
    [sent] = await api_sends(flow, profile.phone, expected=1)
    assert sent["phone_number_id"] == PHONE_NUMBER_ID


@pytest.mark.parametrize(
    ("name", "raw"),
    [("nul", "Hola\\u0000"), ("lone-surrogate", "Hola \\ud800"), ("nul-in-caption", "")],
)
async def test_text_no_store_or_kapso_can_carry_is_422_not_a_500(
    flow: LocalFlow, name: str, raw: str
) -> None:
    # JSON can escape a NUL or half a surrogate pair; neither PostgreSQL text nor WhatsApp can
    # carry them.
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    selector = f'{{"conversation_id": "{conversation_id}"}}'
    if name == "nul-in-caption":
        path, field = "media", "caption"
        body = (
            f'{{"conversation_selector": {selector}, "message_type": "image", '
            f'"file_url": "{IMAGE_URL}", "caption": "Hola\\u0000"}}'
        )
    else:
        path, field = "text", "content"
        body = f'{{"conversation_selector": {selector}, "content": "{raw}"}}'

    response = await flow.service.post(
        f"{SEND_API}/{path}",
        content=body.encode(),
        headers={**bearer(profile.id), "Content-Type": "application/json"},
    )

    assert_error(response, 422, "validation_error", field=field)
    await flow.drain_deliveries()
    assert await api_sends(flow, profile.phone, expected=1, wait_seconds=0.3) == []


async def test_a_conversation_id_longer_than_any_is_422_not_a_500(flow: LocalFlow) -> None:
    user, _ = await make_member(flow.seeder)

    too_long = await flow.service.get(
        f"/api/whatsapp/conversations/{'c' * 5000}/messages", headers=bearer(user.id)
    )
    longest = await flow.service.get(
        f"/api/whatsapp/conversations/{'c' * 200}/messages", headers=bearer(user.id)
    )

    # As long as a selector's conversation_id may be; a 5000-character lookup broke the store.
    assert_error(too_long, 422, "validation_error", field="path.conversation_id")
    assert_error(longest, 404, "conversation_not_found")
