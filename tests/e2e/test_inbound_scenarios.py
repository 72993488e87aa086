"""Inbound scenarios through the Kapso emulator: payload versions, batching, ordering, the
conversation cache, media, manual answers from Kapso's inbox, status and conversation events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.repositories.models import (
    Conversation,
    ConversationStatus,
    Message,
    MessageRole,
    OutboundStatus,
)
from support.e2e import (
    LocalFlow,
    eventually,
    find_inbox_events,
    local_flow,
    quiesce,
    wait_inbox_done,
)
from support.store_data import make_member, unique_phone

pytestmark = pytest.mark.timeout(120)

RECEIVED = "whatsapp.message.received"


@pytest.fixture
async def flow(flow: LocalFlow) -> AsyncIterator[LocalFlow]:
    """The shared flow, left quiet at the end (see `quiesce`)."""
    started = datetime.now(UTC)
    yield flow
    await quiesce(flow, since=started)


# --- helpers -------------------------------------------------------------------------------------


async def conversation_of(flow: LocalFlow, kapso_conversation_id: str) -> Conversation:
    async def found() -> Conversation | None:
        return await flow.stores.conversations.find_conversation_by_kapso_id(kapso_conversation_id)

    conversation: Conversation = await eventually(found)
    return conversation


async def messages_of(flow: LocalFlow, kapso_conversation_id: str) -> list[Message]:
    conversation = await conversation_of(flow, kapso_conversation_id)
    return await flow.stores.conversations.list_messages(conversation.id, limit=200)


async def say_and_wait_arrival(flow: LocalFlow, phone: str, text: str, **body: Any) -> str:
    """The user writes; returns the wamid once the service has recorded the delivery (so the
    next message arrives after it: Kapso itself does not promise delivery order)."""
    sent = await flow.say(phone, text, **body)
    wamid: str = sent["message"]["id"]
    await eventually(lambda: find_inbox_events(flow.stores.inbox, wamid=wamid, event=RECEIVED))
    return wamid


def reply_contexts(replies: list[dict[str, Any]]) -> list[str]:
    return [r["request"]["context"]["message_id"] for r in replies]


async def member_phone(flow: LocalFlow) -> tuple[str, Any, Any]:
    profile, company = await make_member(flow.seeder)
    assert profile.phone is not None
    return profile.phone, profile, company


# --- payload versions and batching -------------------------------------------------------------


async def test_v1_payloads_reach_a_known_user_and_are_stored(flow: LocalFlow) -> None:
    await flow.configure_emulator(payload_version="v1")
    phone, profile, company = await member_phone(flow)
    sent = await flow.say(phone, "Hola desde la versión 1", name="Ana Pérez")

    replies = await flow.outbox(phone, wait_count=1)
    assert len(replies) == 1
    assert "Recibimos tu mensaje" in replies[0]["request"]["text"]["body"]
    assert reply_contexts(replies) == [sent["message"]["id"]]
    # The emulator has the reply before the worker stored it: wait for the event to finish.
    [event] = await wait_inbox_done(flow.stores.inbox, wamid=sent["message"]["id"], event=RECEIVED)

    messages = await messages_of(flow, sent["conversation_id"])
    assert [m.role for m in messages] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert messages[0].content == "Hola desde la versión 1"
    assert messages[0].metadata.whatsapp_message_id == sent["message"]["id"]
    conversation = await conversation_of(flow, sent["conversation_id"])
    assert conversation.metadata.user_id == profile.id
    assert conversation.metadata.company_id == company.id
    assert event.payload["payload_version"] == "v1"


async def test_emulator_batches_are_stored_and_each_message_answered(flow: LocalFlow) -> None:
    """Kapso's batching (one delivery for several messages of a conversation): every message is
    stored and answered, one reply per message."""
    await flow.configure_emulator(batching=True, batch_window_seconds=30)  # 0.3 s at 0.01
    phone, _, _ = await member_phone(flow)
    sent = [await flow.say(phone, f"Parte {n}") for n in range(4)]
    wamids = [s["message"]["id"] for s in sent]

    replies = await flow.outbox(phone, wait_count=4, wait_seconds=15)
    assert reply_contexts(replies) == wamids
    deliveries = (
        await flow.control.get("/_emulator/deliveries", params={"event": RECEIVED})
    ).json()["data"]
    assert [d["batch_size"] for d in deliveries] == [4]
    assert deliveries[0]["state"] == "delivered"

    for wamid in wamids:
        await wait_inbox_done(flow.stores.inbox, wamid=wamid, event=RECEIVED)
    messages = await messages_of(flow, sent[0]["conversation_id"])
    users = [m for m in messages if m.role is MessageRole.USER]
    assert [m.metadata.whatsapp_message_id for m in users] == wamids
    assert len(messages) == 8
    await flow.drain_deliveries()
    assert len(await flow.outbox(phone)) == 4


# --- ordering ------------------------------------------------------------------------------------


async def test_one_conversation_in_order_while_another_proceeds(flow: LocalFlow) -> None:
    first, _, _ = await member_phone(flow)
    second, _, _ = await member_phone(flow)
    sent: dict[str, list[str]] = {first: [], second: []}
    for n in range(5):
        sent[first].append(await say_and_wait_arrival(flow, first, f"Pregunta {n}"))
        if n < 3:
            sent[second].append(await say_and_wait_arrival(flow, second, f"Otra {n}"))

    replies_first, replies_second = await asyncio.gather(
        flow.outbox(first, wait_count=5, wait_seconds=20),
        flow.outbox(second, wait_count=3, wait_seconds=20),
    )
    assert reply_contexts(replies_first) == sent[first]
    assert reply_contexts(replies_second) == sent[second]

    for phone, texts in ((first, "Pregunta"), (second, "Otra")):
        for wamid in sent[phone]:
            await wait_inbox_done(flow.stores.inbox, wamid=wamid, event=RECEIVED)
        events = await find_inbox_events(flow.stores.inbox, event=RECEIVED)
        mine = [e for e in events if e.wamid in sent[phone]]
        conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
            str(mine[0].conversation_key)
        )
        assert conversation is not None
        messages = await flow.stores.conversations.list_messages(conversation.id, limit=200)
        users = [m for m in messages if m.role is MessageRole.USER]
        assert [m.metadata.whatsapp_message_id for m in users] == sent[phone]
        assert [m.content for m in users] == [f"{texts} {n}" for n in range(len(sent[phone]))]
        # Each reply is stored after the message it answers, before the next one.
        roles = [m.role for m in messages]
        assert roles == [MessageRole.USER, MessageRole.ASSISTANT] * len(sent[phone])


# --- phone authentication ------------------------------------------------------------------------


async def test_known_user_without_an_active_company_gets_one_notice(flow: LocalFlow) -> None:
    profile = await flow.seeder.create_profile(phone=unique_phone(), full_name="Luis Rojas")
    assert profile.phone is not None
    first = await flow.say(profile.phone, "Hola", name="Luis Rojas")
    notices = await flow.outbox(profile.phone, wait_count=1)
    assert len(notices) == 1
    body = notices[0]["request"]["text"]["body"]
    assert body.startswith("¡Hola, Luis!")
    assert "no tiene una empresa activa" in body

    second = await flow.say(profile.phone, "¿Hola?")
    await wait_inbox_done(flow.stores.inbox, wamid=second["message"]["id"], event=RECEIVED)
    await flow.drain_deliveries()
    assert len(await flow.outbox(profile.phone)) == 1

    conversation = await conversation_of(flow, first["conversation_id"])
    assert conversation.user_id == profile.id
    assert conversation.metadata.user_id == profile.id
    assert conversation.metadata.company_id is None
    messages = await flow.stores.conversations.list_messages(conversation.id)
    assert [(m.role, m.content) for m in messages if m.role is MessageRole.USER] == [
        (MessageRole.USER, "Hola"),
        (MessageRole.USER, "¿Hola?"),
    ]
    notices_stored = [m for m in messages if m.role is MessageRole.ASSISTANT]
    assert [m.content for m in notices_stored] == [body]
    assert notices_stored[0].metadata.whatsapp_message_id == notices[0]["message_id"]


async def switch_company(flow: LocalFlow, user_id: Any) -> Any:
    """Make another company the user's active one (what a fresh lookup would now find)."""
    other = await flow.seeder.create_company(business_name="Otra SpA", rut="77.777.777-7")
    await flow.seeder.create_session(
        user_id=user_id, company_id=other.id, last_accessed_at=datetime.now(UTC)
    )
    active = await flow.stores.directory.get_active_company(user_id)
    assert active is not None
    assert active.id == other.id
    return other


async def test_a_conversation_reuses_its_cached_user_and_company(flow: LocalFlow) -> None:
    phone, profile, company = await member_phone(flow)
    first = await flow.say(phone, "Uno")
    await flow.outbox(phone, wait_count=1)
    cached = (await conversation_of(flow, first["conversation_id"])).metadata
    assert cached.user_id == profile.id
    assert cached.company_id == company.id
    assert cached.resolved_at is not None

    await switch_company(flow, profile.id)
    second = await flow.say(phone, "Dos")
    assert second["conversation_id"] == first["conversation_id"]
    assert len(await flow.outbox(phone, wait_count=2)) == 2
    # Within the TTL (1 h) nothing was looked up again: the cache still says the old company.
    after = (await conversation_of(flow, first["conversation_id"])).metadata
    assert after.company_id == company.id
    assert after.resolved_at == cached.resolved_at


async def test_with_a_zero_ttl_every_message_resolves_again(database_url: str) -> None:
    started = datetime.now(UTC)
    async with local_flow(database_url, auth_cache_ttl_seconds=0) as flow:
        phone, profile, company = await member_phone(flow)
        first = await flow.say(phone, "Uno")
        await flow.outbox(phone, wait_count=1)
        cached = (await conversation_of(flow, first["conversation_id"])).metadata
        assert cached.company_id == company.id

        other = await switch_company(flow, profile.id)
        await flow.say(phone, "Dos")
        assert len(await flow.outbox(phone, wait_count=2)) == 2
        after = (await conversation_of(flow, first["conversation_id"])).metadata
        assert after.user_id == profile.id
        assert after.company_id == other.id
        assert after.resolved_at is not None
        assert cached.resolved_at is not None
        assert after.resolved_at > cached.resolved_at
        await quiesce(flow, since=started)


async def end_in_emulator(flow: LocalFlow, kapso_conversation_id: str) -> None:
    response = await flow.control.post(f"/_emulator/conversations/{kapso_conversation_id}/end")
    assert response.status_code == 200, response.text


async def test_a_new_kapso_conversation_for_a_known_phone_keeps_the_cache(
    flow: LocalFlow,
) -> None:
    phone, profile, company = await member_phone(flow)
    first = await flow.say(phone, "Primera conversación")
    await flow.outbox(phone, wait_count=1)
    await end_in_emulator(flow, first["conversation_id"])
    await eventually(
        lambda: conversation_is(flow, first["conversation_id"], kapso_status="ended"), within=10
    )
    # A fresh lookup would now find another company; the cache of the number still holds.
    await switch_company(flow, profile.id)

    second = await flow.say(phone, "Segunda conversación")
    assert second["conversation_id"] != first["conversation_id"]
    replies = await flow.outbox(phone, wait_count=2)
    assert reply_contexts(replies)[1] == second["message"]["id"]
    new = await conversation_of(flow, second["conversation_id"])
    old = await conversation_of(flow, first["conversation_id"])
    assert new.id != old.id
    assert new.user_id == profile.id
    assert new.metadata.user_id == profile.id
    assert new.metadata.company_id == company.id
    assert new.metadata.phone_number == phone
    assert new.metadata.kapso_conversation_id == second["conversation_id"]


async def test_a_cache_carried_to_a_new_conversation_keeps_its_age(flow: LocalFlow) -> None:
    """The TTL bounds how long a changed company can go unnoticed; carrying the cache into a
    new Kapso conversation must not make it younger than the lookup it came from."""
    phone, _, _ = await member_phone(flow)
    first = await flow.say(phone, "Primera conversación")
    await flow.outbox(phone, wait_count=1)
    resolved = (await conversation_of(flow, first["conversation_id"])).metadata.resolved_at
    await end_in_emulator(flow, first["conversation_id"])
    await eventually(
        lambda: conversation_is(flow, first["conversation_id"], kapso_status="ended"), within=10
    )
    second = await flow.say(phone, "Segunda conversación")
    await flow.outbox(phone, wait_count=2)
    new = await conversation_of(flow, second["conversation_id"])
    assert new.metadata.resolved_at == resolved


# --- media ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "filename", "mime_type", "label"),
    [
        ("document", "factura-octubre.pdf", "application/pdf", "documento «factura-octubre.pdf»"),
        ("image", None, "image/png", "imagen"),
    ],
)
async def test_a_file_is_acknowledged_and_its_media_stored(
    flow: LocalFlow, kind: str, filename: str | None, mime_type: str, label: str
) -> None:
    phone, _, _ = await member_phone(flow)
    extra = {"filename": filename} if filename else {}
    sent = await flow.say(phone, "Mi factura", type=kind, name="Ana Pérez", **extra)

    [reply] = await flow.outbox(phone, wait_count=1)
    text = reply["request"]["text"]["body"]
    assert "Recibimos tu archivo" in text
    assert label in text
    assert reply_contexts([reply]) == [sent["message"]["id"]]

    messages = await messages_of(flow, sent["conversation_id"])
    inbound = [m for m in messages if m.role is MessageRole.USER]
    assert len(inbound) == 1
    metadata = inbound[0].metadata
    assert metadata.message_type == kind
    assert metadata.whatsapp_message_id == sent["message"]["id"]
    assert metadata.media is not None
    assert metadata.media["id"]
    assert metadata.media["mime_type"] == mime_type
    assert metadata.media.get("url")
    if filename:
        assert metadata.media["filename"] == filename
    assert inbound[0].content == "Mi factura"


# --- what Kapso reports back ---------------------------------------------------------------


async def conversation_is(flow: LocalFlow, kapso_conversation_id: str, **expected: Any) -> bool:
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
        kapso_conversation_id
    )
    if conversation is None:
        return False
    metadata = conversation.metadata.model_dump()
    return all(metadata.get(name) == value for name, value in expected.items())


async def outbound_status(flow: LocalFlow, wamid: str) -> OutboundStatus | None:
    row = await flow.stores.outbound.find_outbound_by_wamid(wamid)
    return row.status if row else None


async def test_a_manual_answer_from_kapso_is_stored_and_our_echoes_are_not(
    flow: LocalFlow,
) -> None:
    phone, _, _ = await member_phone(flow)
    sent = await flow.say(phone, "Necesito hablar con una persona")
    [reply] = await flow.outbox(phone, wait_count=1)
    # Our reply's sent/delivered/read events (echoes of our own send) are all processed.
    for event in ("sent", "delivered", "read"):
        await wait_inbox_done(
            flow.stores.inbox, wamid=reply["message_id"], event=f"whatsapp.message.{event}"
        )
    assert await outbound_status(flow, reply["message_id"]) is OutboundStatus.READ

    response = await flow.control.post(
        "/_emulator/business_app", json={"phone": phone, "text": "Hola, soy Carla de Fizko."}
    )
    assert response.status_code == 201, response.text
    manual = response.json()
    assert manual["conversation_id"] == sent["conversation_id"]
    stored = await eventually(lambda: flow.stores.conversations.find_message_by_wamid(manual["id"]))
    assert stored.role is MessageRole.ASSISTANT
    assert stored.content == "Hola, soy Carla de Fizko."
    assert stored.metadata.manual is True
    # Its own status events change nothing (not one of our sends).
    await wait_inbox_done(flow.stores.inbox, wamid=manual["id"], event="whatsapp.message.read")

    messages = await messages_of(flow, sent["conversation_id"])
    assert [(m.role, m.metadata.manual, m.metadata.whatsapp_message_id) for m in messages] == [
        (MessageRole.USER, None, sent["message"]["id"]),
        (MessageRole.ASSISTANT, None, reply["message_id"]),
        (MessageRole.ASSISTANT, True, manual["id"]),
    ]
    assert await flow.stores.outbound.find_outbound_by_wamid(manual["id"]) is None
    assert len(await flow.outbox(phone)) == 1


async def test_a_manual_answer_on_a_conversation_we_do_not_store_is_not_kept(
    flow: LocalFlow,
) -> None:
    phone = unique_phone()
    await flow.configure_emulator(window_mode="off")
    response = await flow.control.post(
        "/_emulator/business_app", json={"phone": phone, "text": "Mensaje directo"}
    )
    manual = response.json()
    await wait_inbox_done(flow.stores.inbox, wamid=manual["id"], event="whatsapp.message.sent")
    assert await flow.stores.conversations.find_message_by_wamid(manual["id"]) is None
    assert (
        await flow.stores.conversations.find_conversation_by_kapso_id(manual["conversation_id"])
        is None
    )


async def test_status_events_only_move_the_outbound_record_forward(flow: LocalFlow) -> None:
    # Only "sent" arrives by itself; delivered and read are injected by hand, out of order.
    await flow.configure_emulator(status_delays={"sent": 0, "delivered": 60_000, "read": None})
    phone, _, _ = await member_phone(flow)
    await flow.say(phone, "Hola")
    [reply] = await flow.outbox(phone, wait_count=1)
    wamid = reply["message_id"]
    await wait_inbox_done(flow.stores.inbox, wamid=wamid, event="whatsapp.message.sent")
    assert await outbound_status(flow, wamid) is OutboundStatus.SENT

    async def set_status(status: str) -> None:
        response = await flow.control.post(
            f"/_emulator/messages/{wamid}/status", json={"status": status}
        )
        assert response.status_code == 200, response.text
        await wait_inbox_done(flow.stores.inbox, wamid=wamid, event=f"whatsapp.message.{status}")

    await set_status("read")
    assert await outbound_status(flow, wamid) is OutboundStatus.READ
    # A late delivered (first of its kind, so not a duplicate) is processed and changes nothing.
    await set_status("delivered")
    row = await flow.stores.outbound.find_outbound_by_wamid(wamid)
    assert row is not None
    assert row.status is OutboundStatus.READ
    # Nor does a failure after the message was read.
    await set_status("failed")
    row = await flow.stores.outbound.find_outbound_by_wamid(wamid)
    assert row is not None
    assert row.status is OutboundStatus.READ
    assert row.error_code is None


async def test_the_emulators_own_status_progression_ends_at_read(flow: LocalFlow) -> None:
    phone, _, _ = await member_phone(flow)
    await flow.say(phone, "Hola")
    [reply] = await flow.outbox(phone, wait_count=1)
    await eventually(
        lambda: outbound_status(flow, reply["message_id"]), within=10
    )  # the wamid is known
    await wait_inbox_done(
        flow.stores.inbox, wamid=reply["message_id"], event="whatsapp.message.read"
    )
    await wait_inbox_done(
        flow.stores.inbox, wamid=reply["message_id"], event="whatsapp.message.delivered"
    )
    assert await outbound_status(flow, reply["message_id"]) is OutboundStatus.READ
    # A repeated delivered (same wamid and event) is a duplicate at the door.
    response = await flow.control.post(
        f"/_emulator/messages/{reply['message_id']}/status", json={"status": "delivered"}
    )
    assert response.status_code == 200
    await flow.drain_deliveries()
    deliveries = (
        await flow.control.get(
            "/_emulator/deliveries", params={"event": "whatsapp.message.delivered"}
        )
    ).json()["data"]
    assert [d["state"] for d in deliveries] == ["delivered", "delivered"]
    assert await outbound_status(flow, reply["message_id"]) is OutboundStatus.READ


async def test_a_conversation_ended_in_kapso_is_marked_ended(flow: LocalFlow) -> None:
    phone, _, _ = await member_phone(flow)
    sent = await flow.say(phone, "Gracias, eso era todo")
    await flow.outbox(phone, wait_count=1)
    before = await conversation_of(flow, sent["conversation_id"])
    assert before.metadata.kapso_status == "active"
    assert before.status is ConversationStatus.ACTIVE

    await end_in_emulator(flow, sent["conversation_id"])
    await eventually(
        lambda: conversation_is(flow, sent["conversation_id"], kapso_status="ended"), within=10
    )
    after = await conversation_of(flow, sent["conversation_id"])
    assert after.status is ConversationStatus.COMPLETED
    assert after.metadata.user_id == before.metadata.user_id
    assert after.metadata.company_id == before.metadata.company_id
