"""Contract: WhatsApp conversations (get-or-create, metadata cache, listing) and messages."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from app.dev_seed import DirectorySeeder
from app.repositories.conversations import ConversationStore
from app.repositories.models import (
    ConversationStatus,
    MessageMetadata,
    MessageRole,
    NewMessage,
    WhatsAppConversationMetadata,
)
from app.repositories.stores import Stores
from repositories.conftest import StoresFactory
from support.store_data import make_member, unique_phone


@pytest.fixture
def store(stores: Stores) -> ConversationStore:
    return stores.conversations


def whatsapp_metadata(
    user_id: uuid.UUID, company_id: uuid.UUID, phone: str, business: str = "pn-1"
) -> WhatsAppConversationMetadata:
    return WhatsAppConversationMetadata(
        created_via="whatsapp_webhook",
        user_id=user_id,
        company_id=company_id,
        phone_number=phone,
        business_phone_number_id=business,
        resolved_at=datetime.now(UTC),
    )


async def test_get_or_create_conversation(
    store: ConversationStore, seeder: DirectorySeeder
) -> None:
    profile, company = await make_member(seeder)
    kapso_id = f"kc-{uuid.uuid4()}"
    phone = unique_phone()
    created = await store.get_or_create_conversation(
        kapso_conversation_id=kapso_id,
        user_id=profile.id,
        metadata=whatsapp_metadata(profile.id, company.id, phone.removeprefix("+")),
    )
    assert created.created is True
    conversation = created.conversation
    assert conversation.user_id == profile.id
    assert conversation.title == "Nueva conversación"
    assert conversation.status is ConversationStatus.ACTIVE
    assert conversation.metadata.channel == "whatsapp"
    assert conversation.metadata.kapso_conversation_id == kapso_id
    assert conversation.metadata.company_id == company.id
    assert conversation.metadata.phone_number == phone  # stored normalised

    again = await store.get_or_create_conversation(
        kapso_conversation_id=kapso_id,
        user_id=profile.id,
        metadata=WhatsAppConversationMetadata(contact_name="ignored on an existing row"),
    )
    assert again.created is False
    assert again.conversation == conversation
    assert await store.find_conversation_by_kapso_id(kapso_id) == conversation
    assert await store.get_conversation(conversation.id) == conversation
    assert await store.find_conversation_by_kapso_id("kc-unknown") is None
    assert await store.get_conversation(uuid.uuid4()) is None


async def test_concurrent_creates_make_one_conversation(
    open_stores: StoresFactory, seeder: DirectorySeeder
) -> None:
    pools = [(await open_stores()).conversations for _ in range(4)]
    profile, company = await make_member(seeder)
    kapso_id = f"kc-{uuid.uuid4()}"
    metadata = whatsapp_metadata(profile.id, company.id, unique_phone())

    results = await asyncio.gather(
        *(
            pools[i % 4].get_or_create_conversation(
                kapso_conversation_id=kapso_id, user_id=profile.id, metadata=metadata
            )
            for i in range(20)
        )
    )
    assert sum(result.created for result in results) == 1
    assert len({result.conversation.id for result in results}) == 1


async def test_update_conversation_merges_metadata_and_sets_status(
    store: ConversationStore,
    seeder: DirectorySeeder,
) -> None:
    profile, company = await make_member(seeder)
    result = await store.get_or_create_conversation(
        kapso_conversation_id=f"kc-{uuid.uuid4()}",
        user_id=profile.id,
        metadata=whatsapp_metadata(profile.id, company.id, unique_phone()),
    )
    conversation = result.conversation
    other_company = await seeder.create_company(business_name="Other SpA")
    resolved_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    updated = await store.update_conversation(
        conversation.id,
        metadata=WhatsAppConversationMetadata(company_id=other_company.id, resolved_at=resolved_at),
    )
    assert updated is not None
    assert updated.metadata.company_id == other_company.id
    assert updated.metadata.resolved_at == resolved_at
    # Keys not in the patch are kept.
    assert updated.metadata.user_id == profile.id
    assert updated.metadata.phone_number == conversation.metadata.phone_number
    assert updated.metadata.kapso_conversation_id == conversation.metadata.kapso_conversation_id
    assert updated.updated_at >= conversation.updated_at

    ended = await store.update_conversation(
        conversation.id,
        metadata=WhatsAppConversationMetadata(kapso_status="ended"),
        status=ConversationStatus.COMPLETED,
    )
    assert ended is not None
    assert ended.status is ConversationStatus.COMPLETED
    assert ended.metadata.kapso_status == "ended"
    assert ended.metadata.company_id == other_company.id

    assert await store.update_conversation(uuid.uuid4(), status=ConversationStatus.ACTIVE) is None


async def test_latest_conversation_for_phone(
    store: ConversationStore, seeder: DirectorySeeder
) -> None:
    profile, company = await make_member(seeder)
    phone = unique_phone()
    first = await store.get_or_create_conversation(
        kapso_conversation_id=f"kc-{uuid.uuid4()}",
        user_id=profile.id,
        metadata=whatsapp_metadata(profile.id, company.id, phone, business="pn-1"),
    )
    second = await store.get_or_create_conversation(
        kapso_conversation_id=f"kc-{uuid.uuid4()}",
        user_id=profile.id,
        metadata=whatsapp_metadata(profile.id, company.id, phone, business="pn-2"),
    )
    latest = await store.find_latest_conversation_for_phone(phone.removeprefix("+"))
    assert latest is not None
    assert latest.id == second.conversation.id

    # Activity (a new message) makes the first one the latest.
    await store.append_message(
        NewMessage(conversation_id=first.conversation.id, role=MessageRole.USER, content="hola")
    )
    latest = await store.find_latest_conversation_for_phone(phone)
    assert latest is not None
    assert latest.id == first.conversation.id

    on_second_number = await store.find_latest_conversation_for_phone(
        phone, business_phone_number_id="pn-2"
    )
    assert on_second_number is not None
    assert on_second_number.id == second.conversation.id
    assert (
        await store.find_latest_conversation_for_phone(phone, business_phone_number_id="x") is None
    )
    assert await store.find_latest_conversation_for_phone(unique_phone()) is None
    assert await store.find_latest_conversation_for_phone("garbage") is None


async def test_list_company_conversations_paginated(
    store: ConversationStore, seeder: DirectorySeeder
) -> None:
    profile, company = await make_member(seeder)
    other_profile, other_company = await make_member(seeder, company_name="Other SpA")
    ids = []
    for _ in range(5):
        result = await store.get_or_create_conversation(
            kapso_conversation_id=f"kc-{uuid.uuid4()}",
            user_id=profile.id,
            metadata=whatsapp_metadata(profile.id, company.id, unique_phone()),
        )
        ids.append(result.conversation.id)
    await store.get_or_create_conversation(
        kapso_conversation_id=f"kc-{uuid.uuid4()}",
        user_id=other_profile.id,
        metadata=whatsapp_metadata(other_profile.id, other_company.id, unique_phone()),
    )

    first_page = await store.list_company_conversations(company.id, limit=3)
    second_page = await store.list_company_conversations(company.id, limit=3, offset=3)
    assert len(first_page) == 3
    assert len(second_page) == 2
    listed = [conversation.id for conversation in first_page + second_page]
    assert sorted(listed) == sorted(ids)
    assert listed == list(reversed(ids))  # most recently active first
    assert await store.list_company_conversations(company.id, limit=0) == []
    assert await store.list_company_conversations(uuid.uuid4()) == []


async def test_append_and_list_messages(store: ConversationStore, seeder: DirectorySeeder) -> None:
    profile, company = await make_member(seeder)
    conversation = (
        await store.get_or_create_conversation(
            kapso_conversation_id=f"kc-{uuid.uuid4()}",
            user_id=profile.id,
            metadata=whatsapp_metadata(profile.id, company.id, unique_phone()),
        )
    ).conversation
    wamid = f"wamid.{uuid.uuid4()}"
    inbound = await store.append_message(
        NewMessage(
            conversation_id=conversation.id,
            role=MessageRole.USER,
            content="Hola",
            user_id=profile.id,
            metadata=MessageMetadata(
                channel="whatsapp",
                whatsapp_message_id=wamid,
                message_type="image",
                media={"id": "media-1", "mime_type": "image/jpeg", "size": 1234},
            ),
        )
    )
    assert inbound.created is True
    assert inbound.message.metadata.media == {
        "id": "media-1",
        "mime_type": "image/jpeg",
        "size": 1234,
    }
    reply = await store.append_message(
        NewMessage(
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            content="¡Hola!",
            metadata=MessageMetadata(
                channel="whatsapp", whatsapp_message_id=f"wamid.{uuid.uuid4()}", manual=True
            ),
        )
    )

    messages = await store.list_messages(conversation.id)
    assert [m.id for m in messages] == [inbound.message.id, reply.message.id]
    newest = await store.list_messages(conversation.id, limit=1, newest_first=True)
    assert [m.id for m in newest] == [reply.message.id]
    assert await store.list_messages(conversation.id, offset=2) == []
    assert await store.find_message_by_wamid(wamid) == inbound.message
    assert await store.find_message_by_wamid("wamid.unknown") is None

    last_user = await store.latest_message(conversation.id, role=MessageRole.USER)
    assert last_user is not None
    assert last_user.id == inbound.message.id
    last_any = await store.latest_message(conversation.id)
    assert last_any is not None
    assert last_any.id == reply.message.id
    assert await store.latest_message(uuid.uuid4()) is None


async def test_same_wamid_is_stored_once_even_concurrently(
    open_stores: StoresFactory, seeder: DirectorySeeder
) -> None:
    pools = [(await open_stores()).conversations for _ in range(4)]
    profile, company = await make_member(seeder)
    conversation = (
        await pools[0].get_or_create_conversation(
            kapso_conversation_id=f"kc-{uuid.uuid4()}",
            user_id=profile.id,
            metadata=whatsapp_metadata(profile.id, company.id, unique_phone()),
        )
    ).conversation
    message = NewMessage(
        conversation_id=conversation.id,
        role=MessageRole.USER,
        content="Hola",
        metadata=MessageMetadata(channel="whatsapp", whatsapp_message_id=f"wamid.{uuid.uuid4()}"),
    )
    results = await asyncio.gather(*(pools[i % 4].append_message(message) for i in range(20)))
    assert sum(result.created for result in results) == 1
    assert len({result.message.id for result in results}) == 1
    assert len(await pools[0].list_messages(conversation.id)) == 1

    # Messages without a wamid (e.g. the web chat's) are not de-duplicated.
    plain = NewMessage(conversation_id=conversation.id, role=MessageRole.SYSTEM, content="x")
    await pools[0].append_message(plain)
    await pools[0].append_message(plain)
    assert len(await pools[0].list_messages(conversation.id)) == 3


async def test_conversations_by_kapso_ids(
    store: ConversationStore, seeder: DirectorySeeder
) -> None:
    profile, company = await make_member(seeder)
    created = {}
    for _ in range(3):
        kapso_id = f"kc-{uuid.uuid4()}"
        result = await store.get_or_create_conversation(
            kapso_conversation_id=kapso_id,
            user_id=profile.id,
            metadata=whatsapp_metadata(profile.id, company.id, unique_phone()),
        )
        created[kapso_id] = result.conversation
    wanted = set(list(created)[:2]) | {"kc-unknown"}
    found = await store.conversations_by_kapso_ids(wanted)
    assert found == {kapso_id: created[kapso_id] for kapso_id in list(created)[:2]}
    assert await store.conversations_by_kapso_ids(set()) == {}
