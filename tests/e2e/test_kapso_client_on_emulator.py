"""The Kapso client against the emulator over real HTTP: one test per API area.

The emulator is only useful if it is faithful, and the client only if it speaks Kapso: both are
checked here, with the client's typed models parsing every answer the emulator gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.integrations.kapso import (
    ButtonsMessage,
    KapsoAuthenticationError,
    KapsoClient,
    KapsoNotFoundError,
    KapsoRateLimitError,
    KapsoTimeoutError,
    KapsoValidationError,
    ListMessage,
    ListRow,
    ListSection,
    MessageType,
    ReplyButton,
)
from emulator.conftest import API_KEY, PHONE_NUMBER_ID, USER, USER_WA_ID, WABA_ID, make_config
from kapso_emulator.app import create_app
from support.asgi_server import serve

pytestmark = pytest.mark.timeout(60)


class Emulator:
    """A running emulator: its URL and a control-API client."""

    def __init__(self, url: str, control: httpx.AsyncClient) -> None:
        self.url = url
        self.control = control

    async def inbound(self, phone: str = USER, **body: Any) -> dict[str, Any]:
        body.setdefault("text", "Hola")
        response = await self.control.post("/_emulator/inbound", json={"phone": phone, **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return {"id": result["message"]["id"], "conversation_id": result["conversation_id"]}

    async def outbox(self, **params: str) -> list[dict[str, Any]]:
        response = await self.control.get("/_emulator/outbox", params=params)
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def fault(self, **fault: Any) -> None:
        response = await self.control.post("/_emulator/faults", json=fault)
        assert response.status_code == 201, response.text


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    app = create_app(make_config())
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as control:
        yield Emulator(url, control)
        await app.emulator.webhooks.cancel_all()


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[KapsoClient]:
    async with KapsoClient(
        api_token=API_KEY,
        base_url=emulator.url,
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        timeout=5,
    ) as kapso:
        yield kapso


async def test_messages_every_send_kind(emulator: Emulator, client: KapsoClient) -> None:
    inbound = await emulator.inbound(text="Hola", name="María González")
    conversation_id = inbound["conversation_id"]

    text = await client.messages.send_text(
        conversation_id=conversation_id, message="¡Hola María!", callback_data="out-1"
    )
    image = await client.messages.send_media(
        to=USER,
        media_type=MessageType.IMAGE,
        media_url="https://example.com/boleta.jpg",
        caption="Tu boleta",
    )
    buttons = await client.messages.send_interactive(
        to=USER,
        interactive=ButtonsMessage(
            body="¿Qué deseas hacer?",
            buttons=[ReplyButton(id="iva", title="Ver IVA"), ReplyButton(id="f29", title="F29")],
        ),
    )
    listing = await client.messages.send_interactive(
        to=USER,
        interactive=ListMessage(
            body="Elige",
            button_text="Opciones",
            sections=[ListSection(title="Impuestos", rows=[ListRow(id="a", title="IVA")])],
        ),
    )
    reaction = await client.messages.send_reaction(to=USER, message_id=inbound["id"], emoji="👍")
    template = await client.messages.send_template(
        to=USER, template_name="hello_world", language_code="en_US"
    )
    assert await client.messages.mark_as_read(message_id=inbound["id"], typing_indicator=True)

    wamids = [r.wamid for r in (text, image, buttons, listing, reaction, template)]
    assert all(w.startswith("wamid.") for w in wamids)
    assert len(set(wamids)) == 6
    assert text.conversation_id == conversation_id
    assert text.to == USER_WA_ID

    sent = await emulator.outbox(to=USER_WA_ID, kind="message")
    assert [entry["request"]["type"] for entry in sent] == [
        "text",
        "image",
        "interactive",
        "interactive",
        "reaction",
        "template",
    ]
    assert sent[0]["request"]["biz_opaque_callback_data"] == "out-1"
    reads = await emulator.outbox(kind="read+typing")
    assert len(reads) == 1


async def test_messages_history(emulator: Emulator, client: KapsoClient) -> None:
    inbound = await emulator.inbound(text="¿Cuánto IVA debo?")
    reply = await client.messages.send_text(to=USER, message="Son $152.300")

    page = await client.messages.list(conversation_id=inbound["conversation_id"])
    by_id = {record.id: record for record in page.data}
    assert by_id[inbound["id"]].kapso is not None
    assert by_id[inbound["id"]].content == "¿Cuánto IVA debo?"
    assert by_id[reply.wamid].kapso is not None
    assert by_id[reply.wamid].kapso.direction == "outbound"  # type: ignore[union-attr]

    single = await client.messages.get(reply.wamid)
    assert single.id == reply.wamid
    inbound_only = [m.id async for m in client.messages.iterate(direction="inbound")]
    assert inbound_only == [inbound["id"]]


async def test_conversations(emulator: Emulator, client: KapsoClient) -> None:
    first = await emulator.inbound(phone="+56912345678", name="María González")
    await emulator.inbound(phone="+56987654321", name="Pedro Soto")

    everyone = [c.id async for c in client.conversations.iterate()]
    assert len(everyone) == 2
    conversation = await client.conversations.get(first["conversation_id"])
    assert conversation.phone_number_id == PHONE_NUMBER_ID
    assert conversation.contact_name == "María González"
    assert conversation.last_inbound_at is not None

    by_phone = await client.conversations.search("+56 9 1234")
    assert [c.id for c in by_phone] == [first["conversation_id"]]
    by_name = await client.conversations.search("Pedro")
    assert [c.contact_name for c in by_name] == ["Pedro Soto"]

    ended = await client.conversations.end(first["conversation_id"])
    assert ended.status == "ended"
    active = await client.conversations.list(status="active")
    assert first["conversation_id"] not in [c.id for c in active.data]
    assert (await client.conversations.reopen(first["conversation_id"])).status == "active"

    with pytest.raises(KapsoNotFoundError):
        await client.conversations.get("00000000-0000-0000-0000-000000000000")


async def test_contacts_and_notes(emulator: Emulator, client: KapsoClient) -> None:
    await emulator.inbound(name="María González", text="Hola")
    found = await client.contacts.search("+569")
    assert [c.wa_id for c in found] == [USER_WA_ID]
    contact = await client.contacts.get(USER_WA_ID)
    assert contact.profile_name == "María González"
    updated = await client.contacts.update(
        contact.id, display_name="María G.", metadata={"rut": "1-9"}
    )
    assert updated.display_name == "María G."

    history = await client.contacts.history(USER)
    assert [m.content for m in history.data] == ["Hola"]

    note = await client.contacts.add_note(USER_WA_ID, content="RUT 76.123.456-7", name="Empresa")
    notes = await client.contacts.list_notes(USER_WA_ID)
    assert [n.id for n in notes] == [note.id]
    assert notes[0].content == "RUT 76.123.456-7"


async def test_templates(emulator: Emulator, client: KapsoClient) -> None:
    created = await client.templates.create(
        name="recordatorio_f29",
        language="es",
        category="UTILITY",
        components=[
            {
                "type": "BODY",
                "text": "Hola {{1}}, vence tu F29",
                "example": {"body_text": [["María"]]},
            }
        ],
    )
    assert created.id
    template = await client.templates.get("recordatorio_f29")
    assert template.is_approved  # the emulator auto-approves by default
    approved = await client.templates.list(status="APPROVED")
    assert {"hello_world", "recordatorio_f29"} <= {t.name for t in approved.data}

    result = await client.templates.send(
        to=USER, template_name="recordatorio_f29", language_code="es", body_parameters=["María"]
    )
    assert result.wamid.startswith("wamid.")
    assert await client.templates.delete("recordatorio_f29")
    with pytest.raises(KapsoNotFoundError):
        await client.templates.get("recordatorio_f29")


async def test_media(emulator: Emulator, client: KapsoClient) -> None:
    pdf = b"%PDF-1.4 factura"
    uploaded = await client.media.upload(pdf, mime_type="application/pdf", filename="factura.pdf")
    info = await client.media.get(uploaded.id)
    assert info.mime_type == "application/pdf"
    assert info.file_size == len(pdf)
    assert info.download_url
    assert await client.media.download(uploaded.id) == pdf

    await emulator.inbound(text="Hola")  # open the 24-hour window
    sent = await client.messages.send_media(
        to=USER, media_type="document", media_id=uploaded.id, filename="factura.pdf"
    )
    assert sent.wamid
    assert await client.media.delete(uploaded.id)
    with pytest.raises(KapsoValidationError) as info_error:
        await client.media.get(uploaded.id)
    assert info_error.value.code == 100


async def test_phone_numbers(client: KapsoClient) -> None:
    page = await client.phone_numbers.list()
    assert page.meta is not None
    assert page.meta.total_count >= 1
    assert PHONE_NUMBER_ID in [n.phone_number_id for n in page.data]
    number = await client.phone_numbers.get(PHONE_NUMBER_ID)
    assert number.display_phone_number


async def test_errors_window_limits_auth_and_rate(emulator: Emulator, client: KapsoClient) -> None:
    # No inbound message yet from this number: the 24-hour window is closed.
    with pytest.raises(KapsoValidationError) as window:
        await client.messages.send_text(to="+56911112222", message="Hola")
    assert window.value.is_outside_window
    assert window.value.code == 131047

    async with KapsoClient(
        api_token="", base_url=emulator.url, phone_number_id=PHONE_NUMBER_ID
    ) as anonymous:
        with pytest.raises(KapsoAuthenticationError):
            await anonymous.conversations.list()

    await emulator.control.patch("/_emulator/config", json={"rate_limit_per_minute": 5})
    await client.phone_numbers.list()
    first = client.rate_limit_remaining
    await client.phone_numbers.list()
    assert first is not None
    assert client.rate_limit_remaining == first - 1
    with pytest.raises(KapsoRateLimitError) as limited:  # noqa: PT012 - exhaust the window
        for _ in range(6):
            await client.phone_numbers.list()
    assert limited.value.retry_after == 60  # beyond the wait cap: surfaced, not slept


async def test_faults_in_flight_is_retried_and_timeout_is_not(
    emulator: Emulator, client: KapsoClient
) -> None:
    await emulator.inbound(text="Hola")
    await emulator.fault(kind="status", path="*/messages", method="POST", status=409, times=1)
    result = await client.messages.send_text(to=USER, message="Reintento seguro")
    assert result.wamid
    assert len(await emulator.outbox(kind="message")) == 1

    await emulator.fault(
        kind="timeout_after_send", path="*/messages", method="POST", times=1, seconds=10
    )
    async with KapsoClient(
        api_token=API_KEY, base_url=emulator.url, phone_number_id=PHONE_NUMBER_ID, timeout=0.5
    ) as impatient:
        with pytest.raises(KapsoTimeoutError) as timeout:
            await impatient.messages.send_text(to=USER, message="¿Llegó?")
    assert timeout.value.request_sent
    # The emulator recorded the send; the client did not repeat it.
    assert len(await emulator.outbox(kind="message")) == 2
