"""Conversations, contacts, notes, templates, media and phone numbers: requests and parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from app.integrations.kapso import (
    KapsoClient,
    KapsoConfigurationError,
    KapsoNotFoundError,
    KapsoRequestValidationError,
)
from support.kapso_http import (
    API_KEY,
    LEGACY,
    PHONE_NUMBER_ID,
    PLATFORM,
    PROXY,
    WABA_ID,
    conversation_record,
)

CONVERSATIONS = f"{PLATFORM}/whatsapp/conversations"
CONTACTS = f"{PLATFORM}/whatsapp/contacts"
TEMPLATES = f"{PROXY}/{WABA_ID}/message_templates"


def contact_record(wa_id: str = "56912345678", name: str = "María González") -> dict[str, object]:
    return {"id": f"ct-{wa_id}", "wa_id": wa_id, "profile_name": name, "metadata": {}}


# Conversations ------------------------------------------------------------------------------
async def test_conversations_list_with_filters(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.get(CONVERSATIONS).mock(
        return_value=httpx.Response(200, json={"data": [conversation_record()], "paging": {}})
    )
    since = datetime(2026, 11, 1, tzinfo=UTC)
    page = await kapso.conversations.list(
        status="active",
        phone_number="569",
        phone_number_id=PHONE_NUMBER_ID,
        last_active_since=since,
        limit=10,
    )
    params = route.calls.last.request.url.params
    assert dict(params) == {
        "status": "active",
        "phone_number": "569",
        "phone_number_id": PHONE_NUMBER_ID,
        "last_active_since": "2026-11-01T00:00:00+00:00",
        "limit": "10",
    }
    conversation = page.data[0]
    assert conversation.id == "conv-1"
    assert conversation.contact_name == "María González"
    assert conversation.window_open(datetime(2026, 11, 25, 20, tzinfo=UTC)) is True
    assert conversation.window_open(datetime(2026, 11, 26, 12, 1, tzinfo=UTC)) is False


async def test_conversations_get_and_update_status(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    kapso_mock.get(f"{CONVERSATIONS}/conv-1").mock(
        return_value=httpx.Response(200, json={"data": conversation_record()})
    )
    patch = kapso_mock.patch(f"{CONVERSATIONS}/conv-1").mock(
        return_value=httpx.Response(
            200, json={"data": {**conversation_record(), "status": "ended"}}
        )
    )
    assert (await kapso.conversations.get("conv-1")).phone_number == "+56912345678"
    ended = await kapso.conversations.end("conv-1")
    assert ended.status == "ended"
    assert json.loads(patch.calls.last.request.content) == {
        "whatsapp_conversation": {"status": "ended"}
    }
    await kapso.conversations.reopen("conv-1")
    assert json.loads(patch.calls.last.request.content) == {
        "whatsapp_conversation": {"status": "active"}
    }


async def test_conversations_get_missing_is_not_found(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    kapso_mock.get(f"{CONVERSATIONS}/nope").mock(
        return_value=httpx.Response(404, json={"error": "Conversation not found"})
    )
    with pytest.raises(KapsoNotFoundError, match="Conversation not found"):
        await kapso.conversations.get("nope")


async def test_conversations_search_by_phone_fragment(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.get(CONVERSATIONS).mock(
        return_value=httpx.Response(200, json={"data": [conversation_record()]})
    )
    found = await kapso.conversations.search("+56 9 1234", status="active")
    assert [c.id for c in found] == ["conv-1"]
    assert route.calls.last.request.url.params["phone_number"] == "5691234"
    assert route.calls.last.request.url.params["status"] == "active"


async def test_conversations_search_by_contact_name(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    contacts = kapso_mock.get(CONTACTS).mock(
        return_value=httpx.Response(
            200,
            json={
                "data": [
                    contact_record("56911111111", "John A"),
                    contact_record("56922222222", "John B"),
                ]
            },
        )
    )

    def by_phone(request: httpx.Request) -> httpx.Response:
        phone = request.url.params["phone_number"]
        return httpx.Response(
            200, json={"data": [conversation_record(f"conv-{phone}", f"+{phone}")]}
        )

    kapso_mock.get(CONVERSATIONS).mock(side_effect=by_phone)
    found = await kapso.conversations.search("John")
    assert contacts.calls.last.request.url.params["profile_name_contains"] == "John"
    assert [c.id for c in found] == ["conv-56911111111", "conv-56922222222"]


async def test_conversations_iterate_all_pages(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    pages = [
        httpx.Response(
            200,
            json={
                "data": [conversation_record("a"), conversation_record("b")],
                "paging": {"cursors": {"after": "c1"}, "next": "https://kapso.test/next"},
            },
        ),
        httpx.Response(
            200,
            json={
                "data": [conversation_record("c")],
                "paging": {"cursors": {"after": "c2"}, "next": "https://kapso.test/next2"},
            },
        ),
        httpx.Response(200, json={"data": [], "paging": {"cursors": {}}}),
    ]
    route = kapso_mock.get(CONVERSATIONS).mock(side_effect=pages)
    ids = [c.id async for c in kapso.conversations.iterate(status="active")]
    assert ids == ["a", "b", "c"]
    assert [call.request.url.params.get("after") for call in route.calls] == [None, "c1", "c2"]


async def test_iterate_stops_on_a_repeated_cursor(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    looping = httpx.Response(
        200,
        json={
            "data": [conversation_record("a")],
            "paging": {"cursors": {"after": "same"}, "next": "x"},
        },
    )
    route = kapso_mock.get(CONVERSATIONS).mock(return_value=looping)
    ids = [c.id async for c in kapso.conversations.iterate()]
    assert ids == ["a", "a"]
    assert route.call_count == 2


# Contacts -----------------------------------------------------------------------------------
async def test_contacts_search_get_create_update(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    listing = kapso_mock.get(CONTACTS).mock(
        return_value=httpx.Response(200, json={"data": [contact_record()]})
    )
    found = await kapso.contacts.search(query="+569")
    assert found[0].wa_id == "56912345678"
    assert listing.calls.last.request.url.params["wa_id_contains"] == "569"
    await kapso.contacts.search(query="María")
    assert listing.calls.last.request.url.params["profile_name_contains"] == "María"

    kapso_mock.get(f"{CONTACTS}/56912345678").mock(
        return_value=httpx.Response(200, json={"data": contact_record()})
    )
    assert (await kapso.contacts.get("56912345678")).profile_name == "María González"

    create = kapso_mock.post(CONTACTS).mock(
        return_value=httpx.Response(201, json={"data": contact_record()})
    )
    await kapso.contacts.create(wa_id="56912345678", profile_name="María", metadata={"rut": "1-9"})
    assert json.loads(create.calls.last.request.content) == {
        "contact": {"wa_id": "56912345678", "profile_name": "María", "metadata": {"rut": "1-9"}}
    }

    patch = kapso_mock.patch(f"{CONTACTS}/ct-1").mock(
        return_value=httpx.Response(200, json={"data": contact_record()})
    )
    await kapso.contacts.update("ct-1", display_name="María G.")
    assert json.loads(patch.calls.last.request.content) == {"contact": {"display_name": "María G."}}


async def test_contact_history(kapso: KapsoClient, kapso_mock: respx.MockRouter) -> None:
    route = kapso_mock.get(f"{PLATFORM}/whatsapp/messages").mock(
        return_value=httpx.Response(
            200,
            json={
                "data": [{"id": "wamid.1", "kapso": {"direction": "inbound", "content": "Hola"}}]
            },
        )
    )
    page = await kapso.contacts.history("+56912345678", direction="inbound", limit=5)
    assert page.data[0].content == "Hola"
    assert dict(route.calls.last.request.url.params) == {
        "phone_number": "+56912345678",
        "direction": "inbound",
        "limit": "5",
    }


async def test_contact_notes_use_the_legacy_api(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    note = {"id": "n1", "name": "RUT", "content": "76.123.456-7", "metadata": {}}
    listing = kapso_mock.get(f"{LEGACY}/whatsapp_contacts/56912345678/notes").mock(
        return_value=httpx.Response(200, json={"data": [note]})
    )
    create = kapso_mock.post(f"{LEGACY}/whatsapp_contacts/56912345678/notes").mock(
        return_value=httpx.Response(201, json={"data": note})
    )
    notes = await kapso.contacts.list_notes("56912345678")
    assert [n.content for n in notes] == ["76.123.456-7"]
    assert listing.calls.last.request.headers["X-API-Key"] == API_KEY
    created = await kapso.contacts.add_note("56912345678", content="76.123.456-7", name="RUT")
    assert created.id == "n1"
    assert json.loads(create.calls.last.request.content) == {
        "note": {"content": "76.123.456-7", "name": "RUT"}
    }


# Templates ----------------------------------------------------------------------------------
TEMPLATE = {
    "id": "t1",
    "name": "codigo_otp",
    "language": "es_CL",
    "status": "APPROVED",
    "category": "AUTHENTICATION",
    "components": [{"type": "BODY", "text": "Tu código es {{codigo}}"}],
}


async def test_templates_list_get_create_delete(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    listing = kapso_mock.get(TEMPLATES).mock(
        return_value=httpx.Response(200, json={"data": [TEMPLATE], "paging": {}})
    )
    page = await kapso.templates.list(status="APPROVED", category="AUTHENTICATION")
    assert page.data[0].is_approved
    assert listing.calls.last.request.url.params["status"] == "APPROVED"

    template = await kapso.templates.get("codigo_otp")
    assert template.id == "t1"
    assert listing.calls.last.request.url.params["name"] == "codigo_otp"
    with pytest.raises(KapsoNotFoundError):
        await kapso.templates.get("codigo_otp", language="en_US")

    create = kapso_mock.post(TEMPLATES).mock(
        return_value=httpx.Response(
            200, json={"id": "t2", "status": "PENDING", "category": "UTILITY"}
        )
    )
    components = [{"type": "BODY", "text": "Hola {{1}}", "example": {"body_text": [["María"]]}}]
    created = await kapso.templates.create(
        name="saludo", language="es", category="UTILITY", components=components
    )
    assert created.status == "PENDING"
    assert json.loads(create.calls.last.request.content) == {
        "name": "saludo",
        "language": "es",
        "category": "UTILITY",
        "parameter_format": "POSITIONAL",
        "components": components,
    }

    delete = kapso_mock.delete(TEMPLATES).mock(
        return_value=httpx.Response(200, json={"success": True})
    )
    assert await kapso.templates.delete("saludo")
    assert delete.calls.last.request.url.params["name"] == "saludo"


async def test_templates_need_a_waba_id(kapso_mock: respx.MockRouter) -> None:
    async with KapsoClient(api_token="k", base_url="https://kapso.test") as client:
        with pytest.raises(KapsoConfigurationError, match="KAPSO_WABA_ID"):
            await client.templates.list()


# Media --------------------------------------------------------------------------------------
async def test_media_upload_get_download_delete(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    upload = kapso_mock.post(f"{PROXY}/{PHONE_NUMBER_ID}/media").mock(
        return_value=httpx.Response(200, json={"id": "media-1"})
    )
    result = await kapso.media.upload(
        b"%PDF-1.4 ...", mime_type="application/pdf", filename="f29.pdf"
    )
    assert result.id == "media-1"
    request = upload.calls.last.request
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="messaging_product"' in request.content
    assert b'filename="f29.pdf"' in request.content
    assert b"%PDF-1.4 ..." in request.content

    expires = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    info = {
        "id": "media-1",
        "mime_type": "application/pdf",
        "sha256": "abc",
        "file_size": 12,
        "url": "https://lookaside.fbsbx.test/x",
        "download_url": "https://kapso.test/media_download?token=t",
        "download_url_expires_at": expires,
    }
    get = kapso_mock.get(f"{PROXY}/media-1").mock(return_value=httpx.Response(200, json=info))
    download = kapso_mock.get("https://kapso.test/media_download").mock(
        return_value=httpx.Response(200, content=b"%PDF-1.4 ...")
    )
    media = await kapso.media.get("media-1")
    assert media.file_size == 12
    assert get.calls.last.request.url.params["phone_number_id"] == PHONE_NUMBER_ID
    assert await kapso.media.download("media-1") == b"%PDF-1.4 ..."
    assert download.calls.last.request.headers["X-API-Key"] == API_KEY  # Kapso's own host
    assert download.calls.last.request.url.params["token"] == "t"  # the signed query survives

    delete = kapso_mock.delete(f"{PROXY}/media-1").mock(
        return_value=httpx.Response(200, json={"success": True})
    )
    assert await kapso.media.delete("media-1")
    assert delete.called


async def test_media_download_from_another_host_carries_no_api_key(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    kapso_mock.get(f"{PROXY}/media-2").mock(
        return_value=httpx.Response(200, json={"id": "media-2", "url": "https://cdn.meta.test/f"})
    )
    cdn = kapso_mock.get("https://cdn.meta.test/f").mock(
        return_value=httpx.Response(200, content=b"x")
    )
    assert await kapso.media.download("media-2") == b"x"
    assert "X-API-Key" not in cdn.calls.last.request.headers


@pytest.mark.parametrize(
    ("size", "mime"),
    [
        (5 * 1024 * 1024 + 1, "image/jpeg"),
        (16 * 1024 * 1024 + 1, "video/mp4"),
        (500 * 1024 + 1, "image/webp"),
    ],
)
async def test_media_upload_size_limits(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, size: int, mime: str
) -> None:
    route = kapso_mock.post(f"{PROXY}/{PHONE_NUMBER_ID}/media")
    with pytest.raises(KapsoRequestValidationError) as info:
        await kapso.media.upload(b"x" * size, mime_type=mime)
    assert info.value.field == "file"
    assert not route.called


# Phone numbers ------------------------------------------------------------------------------
async def test_phone_numbers_list_and_get(kapso: KapsoClient, kapso_mock: respx.MockRouter) -> None:
    number = {
        "phone_number_id": PHONE_NUMBER_ID,
        "business_account_id": WABA_ID,
        "display_phone_number": "+56 2 2345 6789",
        "verified_name": "Fizko",
        "quality_rating": "GREEN",
        "status": "CONNECTED",
        "throughput_tier": "STANDARD",
    }
    listing = kapso_mock.get(f"{PLATFORM}/whatsapp/phone_numbers").mock(
        return_value=httpx.Response(
            200,
            json={
                "data": [number],
                "meta": {"page": 2, "per_page": 1, "total_pages": 3, "total_count": 3},
            },
        )
    )
    page = await kapso.phone_numbers.list(page=2, per_page=1)
    assert page.meta is not None
    assert page.meta.total_count == 3
    assert page.data[0].verified_name == "Fizko"
    assert dict(listing.calls.last.request.url.params) == {"page": "2", "per_page": "1"}

    kapso_mock.get(f"{PLATFORM}/whatsapp/phone_numbers/{PHONE_NUMBER_ID}").mock(
        return_value=httpx.Response(200, json={"data": number})
    )
    assert (await kapso.phone_numbers.get(PHONE_NUMBER_ID)).quality_rating == "GREEN"


async def test_graph_version_and_base_url_are_configurable(kapso_mock: respx.MockRouter) -> None:
    route = kapso_mock.post("http://127.0.0.1:8091/meta/whatsapp/v23.0/99/messages").mock(
        return_value=httpx.Response(200, json={"messages": [{"id": "wamid.E"}], "contacts": []})
    )
    async with KapsoClient(
        api_token="k",
        base_url="http://127.0.0.1:8091/",
        graph_version="v23.0",
        phone_number_id="99",
    ) as client:
        result = await client.messages.send_text(message="Hola", to="56912345678")
    assert route.called
    assert result.wamid == "wamid.E"
