"""MessagesAPI: the exact requests each send, mark-as-read and history call makes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from app.integrations.kapso import (
    ButtonsMessage,
    CtaUrlMessage,
    KapsoClient,
    KapsoConfigurationError,
    KapsoRequestValidationError,
    ListMessage,
    ListRow,
    ListSection,
    MessageType,
    ReplyButton,
    TemplateButtonParameter,
    TemplateMedia,
)
from support.kapso_http import (
    API_KEY,
    PHONE_NUMBER_ID,
    PLATFORM,
    PROXY,
    conversation_record,
    sent_response,
)

SEND_URL = f"{PROXY}/{PHONE_NUMBER_ID}/messages"


def body_of(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


def envelope(**content: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "56912345678",
        **content,
    }


@pytest.fixture
def send_route(kapso_mock: respx.MockRouter) -> respx.Route:
    return kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(200, json=sent_response()))


async def test_send_text_to_phone(kapso: KapsoClient, send_route: respx.Route) -> None:
    result = await kapso.messages.send_text(message="Hola!", to="+56 9 1234 5678")

    request = send_route.calls.last.request
    assert request.method == "POST"
    assert request.headers["X-API-Key"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert body_of(send_route) == envelope(type="text", text={"body": "Hola!"})
    assert result.wamid == "wamid.OUT1"
    assert result.message_id == "wamid.OUT1"
    assert result.phone_number_id == PHONE_NUMBER_ID
    assert result.to == "56912345678"
    assert result.wa_id == "56912345678"


async def test_send_text_with_reply_preview_and_callback(
    kapso: KapsoClient, send_route: respx.Route
) -> None:
    result = await kapso.messages.send_text(
        message="Mira https://fizko.ai",
        to="56912345678",
        preview_url=True,
        reply_to="wamid.IN1",
        callback_data="out_7f3a2c",
    )
    assert body_of(send_route) == envelope(
        type="text",
        text={"body": "Mira https://fizko.ai", "preview_url": True},
        context={"message_id": "wamid.IN1"},
        biz_opaque_callback_data="out_7f3a2c",
    )
    assert result.callback_data == "out_7f3a2c"


async def test_conversation_id_resolved_once_and_cached(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    lookup = kapso_mock.get(f"{PLATFORM}/whatsapp/conversations/conv-1").mock(
        return_value=httpx.Response(200, json={"data": conversation_record("conv-1")})
    )
    other_number = kapso_mock.post(f"{PROXY}/{PHONE_NUMBER_ID}/messages").mock(
        return_value=httpx.Response(200, json=sent_response())
    )
    first = await kapso.messages.send_text(conversation_id="conv-1", message="Hola!")
    second = await kapso.messages.send_text(conversation_id="conv-1", message="¿Algo más?")

    assert lookup.call_count == 1
    assert other_number.call_count == 2
    assert body_of(other_number)["to"] == "56912345678"
    assert first.conversation_id == second.conversation_id == "conv-1"


async def test_explicit_phone_number_id_wins_over_default(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.post(f"{PROXY}/555/messages").mock(
        return_value=httpx.Response(200, json=sent_response())
    )
    result = await kapso.messages.send_text(message="Hola", phone_number_id="555", to="569")
    assert route.called
    assert result.phone_number_id == "555"


async def test_no_recipient_is_a_validation_error(
    kapso: KapsoClient, send_route: respx.Route
) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.messages.send_text(message="Hola")
    assert info.value.field == "conversation_id"
    assert not send_route.called


async def test_no_default_number_is_a_configuration_error(
    kapso_mock: respx.MockRouter,
) -> None:
    async with KapsoClient(api_token="k", base_url="https://kapso.test") as client:
        with pytest.raises(KapsoConfigurationError):
            await client.messages.send_text(message="Hola", to="56912345678")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {
                "media_type": MessageType.IMAGE,
                "media_url": "https://x.test/a.jpg",
                "caption": "Mira",
            },
            {"type": "image", "image": {"link": "https://x.test/a.jpg", "caption": "Mira"}},
        ),
        (
            {"media_type": "video", "media_id": "m-1", "caption": "Video"},
            {"type": "video", "video": {"id": "m-1", "caption": "Video"}},
        ),
        (
            {"media_type": MessageType.AUDIO, "media_id": "m-2"},
            {"type": "audio", "audio": {"id": "m-2"}},
        ),
        (
            {
                "media_type": MessageType.DOCUMENT,
                "media_url": "https://x.test/f29.pdf",
                "caption": "Tu F29",
                "filename": "f29.pdf",
            },
            {
                "type": "document",
                "document": {
                    "link": "https://x.test/f29.pdf",
                    "caption": "Tu F29",
                    "filename": "f29.pdf",
                },
            },
        ),
        (
            {"media_type": MessageType.STICKER, "media_id": "st-1"},
            {"type": "sticker", "sticker": {"id": "st-1"}},
        ),
    ],
)
async def test_send_media(
    kapso: KapsoClient, send_route: respx.Route, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    await kapso.messages.send_media(to="56912345678", **kwargs)
    assert body_of(send_route) == envelope(**expected)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"media_type": "image"}, "media"),
        ({"media_type": "image", "media_url": "https://a", "media_id": "1"}, "media"),
        ({"media_type": "image", "media_url": "ftp://x/a.jpg"}, "media_url"),
        ({"media_type": "audio", "media_id": "1", "caption": "no"}, "caption"),
        ({"media_type": "image", "media_id": "1", "filename": "a.jpg"}, "filename"),
        ({"media_type": "text", "media_id": "1"}, "media_type"),
        ({"media_type": "image", "media_id": "1", "caption": "x" * 1025}, "image.caption"),
    ],
)
async def test_send_media_rejects_bad_requests(
    kapso: KapsoClient, send_route: respx.Route, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.messages.send_media(to="56912345678", **kwargs)
    assert info.value.field == field
    assert not send_route.called


async def test_send_buttons(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_interactive(
        to="56912345678",
        interactive=ButtonsMessage(
            body="¿Qué deseas hacer?",
            header="Fizko",
            footer="Responde con un botón",
            buttons=[
                ReplyButton(id="opt1", title="Opción 1"),
                ReplyButton(id="opt2", title="Opción 2"),
            ],
        ),
    )
    assert body_of(send_route) == envelope(
        type="interactive",
        interactive={
            "type": "button",
            "header": {"type": "text", "text": "Fizko"},
            "body": {"text": "¿Qué deseas hacer?"},
            "footer": {"text": "Responde con un botón"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "opt1", "title": "Opción 1"}},
                    {"type": "reply", "reply": {"id": "opt2", "title": "Opción 2"}},
                ]
            },
        },
    )


async def test_send_list(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_interactive(
        to="56912345678",
        interactive=ListMessage(
            body="Elige un trámite",
            button_text="Ver opciones",
            sections=[
                ListSection(
                    title="Impuestos",
                    rows=[
                        ListRow(id="f29", title="F29", description="Declaración mensual"),
                        ListRow(id="f22", title="F22"),
                    ],
                )
            ],
        ),
    )
    assert body_of(send_route)["interactive"] == {
        "type": "list",
        "body": {"text": "Elige un trámite"},
        "action": {
            "button": "Ver opciones",
            "sections": [
                {
                    "title": "Impuestos",
                    "rows": [
                        {"id": "f29", "title": "F29", "description": "Declaración mensual"},
                        {"id": "f22", "title": "F22"},
                    ],
                }
            ],
        },
    }


async def test_send_cta_url(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_interactive(
        to="56912345678",
        interactive=CtaUrlMessage(
            body="Regístrate", display_text="Abrir Fizko", url="https://app.fizko.ai"
        ),
    )
    assert body_of(send_route)["interactive"] == {
        "type": "cta_url",
        "body": {"text": "Regístrate"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": "Abrir Fizko", "url": "https://app.fizko.ai"},
        },
    }


async def test_send_template_named_parameters(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_template(
        to="56912345678",
        template_name="codigo_otp",
        language_code="es_CL",
        body_parameters={"codigo": "123456"},
        button_parameters=[TemplateButtonParameter(index=0, sub_type="url", value="123456")],
        callback_data="otp-1",
    )
    assert body_of(send_route) == envelope(
        type="template",
        template={
            "name": "codigo_otp",
            "language": {"code": "es_CL"},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": "123456", "parameter_name": "codigo"}],
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "123456"}],
                },
            ],
        },
        biz_opaque_callback_data="otp-1",
    )


async def test_send_template_positional_with_media_header(
    kapso: KapsoClient, send_route: respx.Route
) -> None:
    await kapso.templates.send(
        to="56912345678",
        template_name="recordatorio_f29",
        language_code="es",
        header_media=TemplateMedia(
            type="document", link="https://x.test/f29.pdf", filename="f29.pdf"
        ),
        body_parameters=["María", "20 de diciembre"],
        button_parameters=[TemplateButtonParameter(index=1, value="PAGAR")],
    )
    assert body_of(send_route)["template"]["components"] == [
        {
            "type": "header",
            "parameters": [
                {
                    "type": "document",
                    "document": {"link": "https://x.test/f29.pdf", "filename": "f29.pdf"},
                }
            ],
        },
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "María"},
                {"type": "text", "text": "20 de diciembre"},
            ],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": "PAGAR"}],
        },
    ]


async def test_send_template_without_parameters_has_no_components(
    kapso: KapsoClient, send_route: respx.Route
) -> None:
    await kapso.messages.send_template(
        to="56912345678", template_name="hello_world", language_code="en_US"
    )
    assert body_of(send_route)["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"template_name": "Bad-Name", "language_code": "es"}, "template.name"),
        ({"template_name": "ok", "language_code": "spanish"}, "template.language.code"),
        (
            {"template_name": "ok", "language_code": "es", "body_parameters": ["", "x"]},
            "template.body.parameters[0]",
        ),
    ],
)
async def test_send_template_rejects_bad_requests(
    kapso: KapsoClient, send_route: respx.Route, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.messages.send_template(to="56912345678", **kwargs)
    assert info.value.field == field
    assert not send_route.called


async def test_send_reaction(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_reaction(to="56912345678", message_id="wamid.IN1", emoji="👍")
    assert body_of(send_route) == envelope(
        type="reaction", reaction={"message_id": "wamid.IN1", "emoji": "👍"}
    )


async def test_mark_as_read_with_typing_indicator(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(200, json={"success": True}))
    assert await kapso.messages.mark_as_read(message_id="wamid.IN1", typing_indicator=True)
    assert body_of(route) == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN1",
        "typing_indicator": {"type": "text"},
    }


async def test_mark_as_read_by_conversation(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    kapso_mock.get(f"{PLATFORM}/whatsapp/conversations/conv-9").mock(
        return_value=httpx.Response(
            200, json={"data": {**conversation_record("conv-9"), "phone_number_id": "777"}}
        )
    )
    route = kapso_mock.post(f"{PROXY}/777/messages").mock(
        return_value=httpx.Response(200, json={"success": True})
    )
    assert await kapso.messages.mark_as_read(message_id="wamid.IN2", conversation_id="conv-9")
    assert "typing_indicator" not in body_of(route)


async def test_history_list_and_get(kapso: KapsoClient, kapso_mock: respx.MockRouter) -> None:
    record = {
        "id": "wamid.A",
        "timestamp": "1764072000",
        "type": "text",
        "from": "56912345678",
        "text": {"body": "Hola"},
        "kapso": {"direction": "inbound", "status": "received", "content": "Hola"},
    }
    listing = kapso_mock.get(SEND_URL).mock(
        return_value=httpx.Response(
            200, json={"data": [record], "paging": {"cursors": {"before": "b", "after": "a"}}}
        )
    )
    single = kapso_mock.get(f"{SEND_URL}/wamid.A").mock(
        return_value=httpx.Response(200, json=record)
    )
    page = await kapso.messages.list(conversation_id="conv-1", direction="inbound", limit=50)
    params = listing.calls.last.request.url.params
    assert params["conversation_id"] == "conv-1"
    assert params["direction"] == "inbound"
    assert params["limit"] == "50"
    assert params["fields"] == "kapso(default)"
    assert page.data[0].from_ == "56912345678"
    assert page.data[0].content == "Hola"
    assert page.next_cursor is None  # no `next` link: last page

    message = await kapso.messages.get("wamid.A")
    assert single.called
    assert message.kapso is not None
    assert message.kapso.direction == "inbound"


async def test_history_iterate_walks_every_page(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        if after is None:
            return httpx.Response(
                200,
                json={
                    "data": [{"id": "m1"}, {"id": "m2"}],
                    "paging": {"cursors": {"after": "c2"}, "next": f"{SEND_URL}?after=c2"},
                },
            )
        assert after == "c2"
        return httpx.Response(200, json={"data": [{"id": "m3"}], "paging": {"cursors": {}}})

    route = kapso_mock.get(SEND_URL).mock(side_effect=page)
    ids = [m.id async for m in kapso.messages.iterate()]
    assert ids == ["m1", "m2", "m3"]
    assert route.call_count == 2
    assert route.calls[0].request.url.params["limit"] == "100"
