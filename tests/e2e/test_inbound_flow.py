"""Inbound WhatsApp end to end: emulator → signed webhook → inbox → worker → reply."""

from __future__ import annotations

import pytest

from app.repositories.models import MessageRole
from support.e2e import LocalFlow, wait_inbox_done
from support.store_data import make_member, unique_phone

pytestmark = pytest.mark.timeout(90)
RECEIVED = "whatsapp.message.received"


async def test_known_user_gets_one_reply_and_both_messages_are_stored(flow: LocalFlow) -> None:
    profile, company = await make_member(flow.seeder)
    assert profile.phone is not None
    sent = await flow.say(profile.phone, "Hola, ¿cuánto IVA debo pagar?", name="Ana Pérez")

    replies = await flow.outbox(profile.phone, wait_count=1)
    assert len(replies) == 1
    assert replies[0]["request"]["type"] == "text"
    assert "Recibimos tu mensaje" in replies[0]["request"]["text"]["body"]
    assert replies[0]["request"]["context"] == {"message_id": sent["message"]["id"]}

    # The emulator has the reply before the worker stored it: wait for the event to finish.
    await wait_inbox_done(flow.stores.inbox, wamid=sent["message"]["id"], event=RECEIVED)
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
        sent["conversation_id"]
    )
    assert conversation is not None
    assert conversation.metadata.channel == "whatsapp"
    assert conversation.metadata.created_via == "whatsapp_webhook"
    assert conversation.metadata.user_id == profile.id
    assert conversation.metadata.company_id == company.id
    assert conversation.metadata.phone_number == profile.phone
    messages = await flow.stores.conversations.list_messages(conversation.id)
    assert [m.role for m in messages] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert messages[0].content == "Hola, ¿cuánto IVA debo pagar?"
    assert messages[0].metadata.whatsapp_message_id == sent["message"]["id"]
    assert messages[1].metadata.whatsapp_message_id == replies[0]["message_id"]


async def test_unknown_number_gets_the_registration_message_once(flow: LocalFlow) -> None:
    phone = unique_phone()
    await flow.say(phone, "Hola", name="Pedro Soto")
    notices = await flow.outbox(phone, wait_count=1)
    assert len(notices) == 1
    body = notices[0]["request"]["text"]["body"]
    assert body.startswith("¡Hola, Pedro!")
    assert "https://app.fizko.ai" in body

    await flow.say(phone, "¿Hola?")
    await flow.drain_deliveries()
    assert len(await flow.outbox(phone, wait_count=2, wait_seconds=1.5)) == 1
