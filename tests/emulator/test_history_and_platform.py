"""Message history, Platform conversations/contacts/phone numbers, legacy notes, pagination."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PHONE_NUMBER_ID, USER, USER_WA_ID, RunningEmulator

pytestmark = pytest.mark.timeout(30)

PLATFORM = "/platform/v1/whatsapp"
OTHER = "+56987654321"


async def test_proxy_message_history_shapes_and_filters(kapso: RunningEmulator) -> None:
    inbound = await kapso.inbound(text="Hola", name="María González")
    sent = (await kapso.send_text("Respuesta")).json()["messages"][0]["id"]

    everything = await kapso.client.get(kapso.proxy(f"{PHONE_NUMBER_ID}/messages"))
    outbound = await kapso.client.get(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        params={"direction": "outbound", "fields": "kapso(default)"},
    )
    one = await kapso.client.get(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages/{inbound['message']['id']}"),
        params={"fields": "kapso(direction,contact_name)"},
    )

    data = everything.json()["data"]
    assert [m["id"] for m in data] == [sent, inbound["message"]["id"]]  # newest first
    assert data[0] == {
        "id": sent,
        "timestamp": data[0]["timestamp"],
        "type": "text",
        "to": USER_WA_ID,
        "text": {"body": "Respuesta"},
    }
    record = outbound.json()["data"][0]
    assert record["kapso"]["direction"] == "outbound"
    assert record["kapso"]["phone_number"] == USER
    assert record["kapso"]["whatsapp_conversation_id"] == inbound["conversation_id"]
    assert len(outbound.json()["data"]) == 1
    assert one.json()["from"] == USER_WA_ID
    assert one.json()["kapso"] == {"direction": "inbound", "contact_name": "María González"}


def texts(page: dict[str, Any]) -> list[str]:
    return [m["text"]["body"] for m in page["data"]]


async def test_cursor_pagination(kapso: RunningEmulator) -> None:
    for index in range(5):
        await kapso.inbound(text=f"m{index}")
    url = kapso.proxy(f"{PHONE_NUMBER_ID}/messages")

    first = (await kapso.client.get(url, params={"limit": 2})).json()
    second = (
        await kapso.client.get(
            url, params={"limit": 2, "after": first["paging"]["cursors"]["after"]}
        )
    ).json()
    third = (await kapso.client.get(first["paging"]["next"].replace(kapso.url, ""))).json()
    back = (
        await kapso.client.get(
            url, params={"limit": 2, "before": second["paging"]["cursors"]["before"]}
        )
    ).json()
    last = (
        await kapso.client.get(
            url, params={"limit": 2, "after": third["paging"]["cursors"]["after"]}
        )
    ).json()
    too_big = await kapso.client.get(url, params={"limit": 101})
    platform_bad = await kapso.client.get(f"{PLATFORM}/messages", params={"limit": 0})
    bad_cursor = await kapso.client.get(f"{PLATFORM}/messages", params={"after": "nonsense"})

    assert texts(first) == ["m4", "m3"]
    assert texts(second) == ["m2", "m1"]
    assert texts(third) == texts(second)
    assert texts(back) == ["m4", "m3"]
    assert texts(last) == ["m0"]
    assert "next" not in last["paging"]
    assert "previous" in last["paging"]
    assert "previous" not in first["paging"]
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == 100
    assert platform_bad.status_code == 400
    assert set(platform_bad.json()) == {"error"}
    assert bad_cursor.status_code == 400


async def test_platform_messages(kapso: RunningEmulator) -> None:
    await kapso.inbound(text="Hola")
    await kapso.inbound(type="image", caption="Boleta")
    await kapso.inbound(phone=OTHER, text="Otro")

    media = await kapso.client.get(f"{PLATFORM}/messages", params={"has_media": "true"})
    by_phone = await kapso.client.get(f"{PLATFORM}/messages", params={"phone_number": OTHER})

    record = media.json()["data"][0]
    assert record["type"] == "image"
    assert record["kapso"]["has_media"] is True
    assert record["kapso"]["media_data"]["content_type"] == "image/png"
    download = await kapso.client.get(record["kapso"]["media_url"].replace(kapso.url, ""))
    assert download.content.startswith(b"\x89PNG")
    assert [m["text"]["body"] for m in by_phone.json()["data"]] == ["Otro"]


async def test_platform_conversations(kapso: RunningEmulator) -> None:
    mine = (await kapso.inbound(text="Hola", name="María"))["conversation_id"]
    other = (await kapso.inbound(phone=OTHER, text="Hola"))["conversation_id"]

    listed = (await kapso.client.get(f"{PLATFORM}/conversations")).json()
    partial = (
        await kapso.client.get(f"{PLATFORM}/conversations", params={"phone_number": "9123"})
    ).json()
    by_number = (
        await kapso.client.get(f"{PLATFORM}/conversations", params={"phone_number_id": "nope"})
    ).json()
    got = (await kapso.client.get(f"{PLATFORM}/conversations/{mine}")).json()
    ended = await kapso.client.patch(
        f"{PLATFORM}/conversations/{mine}", json={"whatsapp_conversation": {"status": "ended"}}
    )
    active_only = (
        await kapso.client.get(f"{PLATFORM}/conversations", params={"status": "active"})
    ).json()
    reopened = await kapso.client.patch(
        kapso.proxy(f"conversations/{mine}"), json={"status": "active"}
    )
    future = (
        await kapso.client.get(
            f"{PLATFORM}/conversations", params={"created_after": "2999-01-01T00:00:00Z"}
        )
    ).json()
    missing = await kapso.client.get(f"{PLATFORM}/conversations/nope")

    assert [c["id"] for c in listed["data"]] == [other, mine]
    assert [c["id"] for c in partial["data"]] == [mine]
    assert by_number["data"] == []
    record = got["data"]
    assert set(record) >= {
        "id", "phone_number", "phone_number_id", "status", "last_active_at", "created_at",
        "updated_at", "metadata", "kapso",
    }  # fmt: skip
    assert record["kapso"]["contact_name"] == "María"
    assert record["kapso"]["last_inbound_at"] is not None
    assert ended.json()["data"]["status"] == "ended"
    assert [c["id"] for c in active_only["data"]] == [other]
    assert reopened.json()["status"] == "active"
    assert future["data"] == []
    assert missing.status_code == 404
    assert missing.json() == {"error": "Conversation not found"}


async def test_proxy_conversations(kapso: RunningEmulator) -> None:
    conv = (await kapso.inbound())["conversation_id"]

    listed = await kapso.client.get(kapso.proxy(f"{PHONE_NUMBER_ID}/conversations"))
    one = await kapso.client.get(kapso.proxy(f"{PHONE_NUMBER_ID}/conversations/{conv}"))

    assert [c["id"] for c in listed.json()["data"]] == [conv]
    assert one.json()["phone_number"] == USER


async def test_contacts_crud(kapso: RunningEmulator) -> None:
    await kapso.inbound(name="María González")  # inbound creates a contact too

    created = await kapso.client.post(
        f"{PLATFORM}/contacts",
        json={
            "contact": {"wa_id": "56911112222", "profile_name": "Pedro", "metadata": {"rut": "1-9"}}
        },
    )
    duplicate = await kapso.client.post(
        f"{PLATFORM}/contacts", json={"contact": {"wa_id": "56911112222"}}
    )
    listed = await kapso.client.get(
        f"{PLATFORM}/contacts", params={"profile_name_contains": "marí"}
    )
    by_phone = await kapso.client.get(f"{PLATFORM}/contacts/+56911112222")
    patched = await kapso.client.patch(
        f"{PLATFORM}/contacts/{created.json()['data']['id']}",
        json={"contact": {"display_name": "Pedro S."}},
    )
    deleted = await kapso.client.delete(f"{PLATFORM}/contacts/56911112222")
    gone = await kapso.client.get(f"{PLATFORM}/contacts/56911112222")

    assert created.status_code == 201
    assert set(created.json()["data"]) >= {
        "id", "wa_id", "profile_name", "display_name", "metadata", "created_at", "updated_at",
    }  # fmt: skip
    assert duplicate.status_code == 422
    assert set(duplicate.json()) == {"error"}
    assert [c["wa_id"] for c in listed.json()["data"]] == [USER_WA_ID]
    assert by_phone.json()["data"]["profile_name"] == "Pedro"
    assert patched.json()["data"]["display_name"] == "Pedro S."
    assert patched.json()["data"]["metadata"] == {"rut": "1-9"}
    assert deleted.status_code == 204
    assert gone.status_code == 404


async def test_phone_numbers_offset_pagination(kapso: RunningEmulator) -> None:
    listed = await kapso.client.get(f"{PLATFORM}/phone_numbers", params={"page": 1, "per_page": 10})
    one = await kapso.client.get(f"{PLATFORM}/phone_numbers/{PHONE_NUMBER_ID}")
    bad = await kapso.client.get(f"{PLATFORM}/phone_numbers", params={"page": 0})

    assert listed.json()["meta"] == {"page": 1, "per_page": 10, "total_pages": 1, "total_count": 1}
    assert set(one.json()["data"]) >= {
        "phone_number_id", "business_account_id", "display_phone_number", "verified_name",
        "quality_rating", "status", "throughput_tier",
    }  # fmt: skip
    assert bad.status_code == 400


async def test_legacy_contact_notes(kapso: RunningEmulator) -> None:
    await kapso.inbound(name="María")

    created = await kapso.client.post(
        f"/api/v1/whatsapp_contacts/{USER}/notes",
        json={"note": {"name": "Soporte", "content": "Pidió su F29", "metadata": {"k": 1}}},
    )
    listed = await kapso.client.get(f"/api/v1/whatsapp_contacts/{USER_WA_ID}/notes")
    unknown = await kapso.client.get("/api/v1/whatsapp_contacts/+56900000000/notes")

    assert created.status_code == 201
    note = created.json()["data"]
    assert set(note) == {"id", "name", "content", "metadata", "created_at", "updated_at"}
    assert [n["content"] for n in listed.json()["data"]] == ["Pidió su F29"]
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Contact not found"}


async def test_media_upload_get_download_delete(kapso: RunningEmulator) -> None:
    pdf = b"%PDF-1.4 test"
    uploaded = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/media"),
        data={"messaging_product": "whatsapp", "type": "application/pdf"},
        files={"file": ("f29.pdf", pdf, "application/pdf")},
    )
    media_id = uploaded.json()["id"]

    info = await kapso.client.get(
        kapso.proxy(media_id), params={"phone_number_id": PHONE_NUMBER_ID}
    )
    download = await kapso.client.get(info.json()["download_url"], headers={"X-API-Key": ""})
    deleted = await kapso.client.delete(kapso.proxy(media_id))
    gone = await kapso.client.get(kapso.proxy(media_id))
    too_big = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/media"),
        data={"messaging_product": "whatsapp", "type": "image/webp"},
        files={"file": ("s.webp", b"x" * (500 * 1024 + 1), "image/webp")},
    )

    assert set(info.json()) >= {
        "id", "mime_type", "sha256", "file_size", "url", "download_url", "download_url_expires_at",
    }  # fmt: skip
    assert info.json()["file_size"] == len(pdf)
    assert download.content == pdf
    assert deleted.json() == {"success": True}
    assert gone.status_code == 400
    assert gone.json()["error"]["code"] == 100
    assert too_big.status_code == 400


async def test_platform_patch_accepts_the_bare_status_shape_too(kapso: RunningEmulator) -> None:
    conv = (await kapso.inbound())["conversation_id"]

    response = await kapso.client.patch(
        f"{PLATFORM}/conversations/{conv}", json={"status": "ended"}
    )

    assert response.json()["data"]["status"] == "ended"


async def test_reset_forgets_everything(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    await kapso.client.post("/_emulator/faults", json={"kind": "status", "times": None})
    await kapso.client.post("/_emulator/clock/advance", json={"hours": 3})

    await kapso.client.post("/_emulator/reset")

    conversations = await kapso.client.get(f"{PLATFORM}/conversations")
    assert conversations.status_code == 200
    assert conversations.json()["data"] == []
    assert (await kapso.client.get("/_emulator/clock")).json()["offset_seconds"] == 0
    assert (await kapso.client.get("/_emulator/outbox")).json()["data"] == []


async def test_unknown_proxy_path_is_a_graph_error(kapso: RunningEmulator) -> None:
    response = await kapso.client.get(kapso.proxy("1/2/3/4"))

    assert response.status_code == 400
    assert response.json()["error"]["error_subcode"] == 33
