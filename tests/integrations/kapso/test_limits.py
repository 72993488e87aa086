"""WhatsApp's limits at their boundaries, counted in Unicode code points."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.integrations.kapso import (
    ButtonsMessage,
    CtaUrlMessage,
    KapsoClient,
    KapsoRequestValidationError,
    ListMessage,
    ListRow,
    ListSection,
    ReplyButton,
    limits,
)
from app.integrations.kapso.models import InteractiveMessage
from support.kapso_http import PHONE_NUMBER_ID, PROXY, sent_response

SEND_URL = f"{PROXY}/{PHONE_NUMBER_ID}/messages"


def rows(n: int, prefix: str = "r") -> list[ListRow]:
    return [ListRow(id=f"{prefix}{i}", title=f"Fila {i}") for i in range(n)]


def buttons(n: int) -> list[ReplyButton]:
    return [ReplyButton(id=f"b{i}", title=f"Botón {i}") for i in range(n)]


@pytest.fixture
def send_route(kapso_mock: respx.MockRouter) -> respx.Route:
    return kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(200, json=sent_response()))


async def test_text_of_4096_passes(kapso: KapsoClient, send_route: respx.Route) -> None:
    await kapso.messages.send_text(message="a" * 4096, to="56912345678")
    assert send_route.called


async def test_text_of_4097_fails_before_sending(
    kapso: KapsoClient, send_route: respx.Route
) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.messages.send_text(message="a" * 4097, to="56912345678")
    assert info.value.field == "text.body"
    assert "4097" in info.value.message
    assert "4096" in info.value.message
    assert not send_route.called


def test_emoji_counts_as_one_character() -> None:
    text = "😀" * 4096  # 4096 code points, 16384 UTF-8 bytes, 8192 UTF-16 units
    limits.validate_text(text)
    with pytest.raises(KapsoRequestValidationError):
        limits.validate_text(text + "😀")


def test_empty_text_is_rejected() -> None:
    with pytest.raises(KapsoRequestValidationError, match="must not be empty"):
        limits.validate_text("   ")


def test_caption_limit() -> None:
    limits.validate_caption("c" * 1024)
    with pytest.raises(KapsoRequestValidationError) as info:
        limits.validate_caption("c" * 1025, "image.caption")
    assert info.value.field == "image.caption"


def test_callback_data_limit() -> None:
    limits.validate_callback_data("x" * 512)
    with pytest.raises(KapsoRequestValidationError):
        limits.validate_callback_data("x" * 513)


VALID: list[InteractiveMessage] = [
    ButtonsMessage(body="b", buttons=buttons(1)),
    ButtonsMessage(body="b", buttons=buttons(3)),
    ButtonsMessage(body="b" * 1024, header="h" * 60, footer="f" * 60, buttons=buttons(2)),
    ButtonsMessage(body="b", buttons=[ReplyButton(id="i" * 256, title="t" * 20)]),
    ListMessage(body="b", button_text="x" * 20, sections=[ListSection(rows=rows(10))]),
    ListMessage(
        body="b",
        button_text="Ver",
        sections=[ListSection(title=f"S{i}", rows=rows(1, f"s{i}-")) for i in range(10)],
    ),
    ListMessage(
        body="b",
        button_text="Ver",
        sections=[
            ListSection(
                title="t" * 24,
                rows=[ListRow(id="i" * 200, title="t" * 24, description="d" * 72)],
            )
        ],
    ),
    CtaUrlMessage(body="b", display_text="d" * 20, url="https://app.fizko.ai"),
]


@pytest.mark.parametrize("message", VALID)
def test_interactive_at_the_limits_passes(message: InteractiveMessage) -> None:
    limits.validate_interactive(message)


INVALID: list[tuple[InteractiveMessage, str]] = [
    (ButtonsMessage(body="b", buttons=[]), "interactive.action.buttons"),
    (ButtonsMessage(body="b", buttons=buttons(4)), "interactive.action.buttons"),
    (
        ButtonsMessage(body="b", buttons=[ReplyButton(id="1", title="t" * 21)]),
        "interactive.action.buttons[0].reply.title",
    ),
    (
        ButtonsMessage(body="b", buttons=[ReplyButton(id="i" * 257, title="t")]),
        "interactive.action.buttons[0].reply.id",
    ),
    (
        ButtonsMessage(
            body="b", buttons=[ReplyButton(id="1", title="a"), ReplyButton(id="1", title="b")]
        ),
        "interactive.action.buttons[1].reply.id",
    ),
    (ButtonsMessage(body="b" * 1025, buttons=buttons(1)), "interactive.body.text"),
    (ButtonsMessage(body="b", header="h" * 61, buttons=buttons(1)), "interactive.header.text"),
    (ButtonsMessage(body="b", footer="f" * 61, buttons=buttons(1)), "interactive.footer.text"),
    (
        ListMessage(body="b", button_text="Ver", sections=[ListSection(rows=rows(11))]),
        "interactive.action.sections",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[
                ListSection(title="A", rows=rows(6, "a")),
                ListSection(title="B", rows=rows(5, "b")),
            ],
        ),
        "interactive.action.sections",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[ListSection(title=f"S{i}", rows=rows(1, f"s{i}")) for i in range(11)],
        ),
        "interactive.action.sections",
    ),
    (
        ListMessage(body="b", button_text="x" * 21, sections=[ListSection(rows=rows(1))]),
        "interactive.action.button",
    ),
    (
        ListMessage(
            body="b", button_text="Ver", sections=[ListSection(title="t" * 25, rows=rows(1))]
        ),
        "interactive.action.sections[0].title",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[ListSection(rows=[ListRow(id="1", title="t" * 25)])],
        ),
        "interactive.action.sections[0].rows[0].title",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[ListSection(rows=[ListRow(id="1", title="t", description="d" * 73)])],
        ),
        "interactive.action.sections[0].rows[0].description",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[ListSection(rows=[ListRow(id="i" * 201, title="t")])],
        ),
        "interactive.action.sections[0].rows[0].id",
    ),
    (
        ListMessage(
            body="b",
            button_text="Ver",
            sections=[ListSection(rows=rows(1, "a")), ListSection(rows=rows(1, "b"))],
        ),
        "interactive.action.sections[0].title",
    ),
    (ListMessage(body="b", button_text="Ver", sections=[]), "interactive.action.sections"),
    (
        CtaUrlMessage(body="b", display_text="d" * 21, url="https://x"),
        "interactive.action.parameters.display_text",
    ),
    (
        CtaUrlMessage(body="b", display_text="d", url="javascript:x"),
        "interactive.action.parameters.url",
    ),
]


@pytest.mark.parametrize(("message", "field"), INVALID)
async def test_interactive_over_the_limits_names_the_field(
    kapso: KapsoClient, send_route: respx.Route, message: InteractiveMessage, field: str
) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.messages.send_interactive(interactive=message, to="56912345678")
    assert info.value.field == field
    assert not send_route.called


@pytest.mark.parametrize("name", ["hello_world", "codigo_otp", "a", "x" * 512, "f29_2026"])
def test_template_names_that_pass(name: str) -> None:
    limits.validate_template_name(name)


@pytest.mark.parametrize("name", ["Hello", "con espacio", "guion-medio", "", "x" * 513, "ñandú"])
def test_template_names_that_fail(name: str) -> None:
    with pytest.raises(KapsoRequestValidationError) as info:
        limits.validate_template_name(name)
    assert info.value.field == "template.name"
