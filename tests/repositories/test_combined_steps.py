"""Contract: the combined operations — one transaction (one round trip) per step of the flow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.repositories.errors import StoreConstraintError
from app.repositories.models import (
    Conversation,
    InboxEvent,
    InboxLease,
    InboxState,
    MessageMetadata,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    OutboundStatus,
    WhatsAppConversationMetadata,
)
from app.repositories.whatsapp import WhatsAppRepository
from support.store_data import make_member, unique_phone

RECEIVED = "whatsapp.message.received"


async def conversation_of(repository: WhatsAppRepository, kapso_id: str) -> Conversation:
    profile, company = await make_member(repository)
    result = await repository.get_or_create_conversation(
        kapso_conversation_id=kapso_id,
        user_id=profile.id,
        metadata=WhatsAppConversationMetadata(
            user_id=profile.id,
            company_id=company.id,
            phone_number=unique_phone(),
            resolved_at=datetime.now(UTC),
        ),
    )
    return result.conversation


async def claimed_event(
    repository: WhatsAppRepository, tag: str, *, key: str | None, owner: str = "w1"
) -> InboxEvent:
    await repository.record_inbox_events(
        [
            NewInboxEvent(
                idempotency_key=f"{tag}-{key}",
                event=RECEIVED,
                conversation_key=key,
                payload={"tag": tag},
            )
        ]
    )
    for _ in range(20):
        claimed = await repository.claim_inbox_events(
            owner=owner, limit=50, lease_seconds=30, max_attempts=3
        )
        mine = [event for event in claimed if event.idempotency_key == f"{tag}-{key}"]
        if mine:
            return mine[0]
    raise AssertionError("the event was never claimed")


def user_message(conversation: Conversation, wamid: str, text: str = "hola") -> NewMessage:
    return NewMessage(
        conversation_id=conversation.id,
        role=MessageRole.USER,
        content=text,
        user_id=conversation.user_id,
        metadata=MessageMetadata(channel="whatsapp", whatsapp_message_id=wamid),
    )


def reply(conversation: Conversation, key: str, text: str) -> NewOutboundMessage:
    return NewOutboundMessage(
        to_phone=conversation.metadata.phone_number or unique_phone(),
        message_type="text",
        purpose="reply",
        conversation_id=conversation.id,
        idempotency_key=key,
        content=text,
    )


async def test_a_claim_brings_the_conversation_of_its_key(
    repository: WhatsAppRepository, tag: str
) -> None:
    conversation = await conversation_of(repository, f"{tag}-kc")
    with_conversation = await claimed_event(repository, tag, key=f"{tag}-kc")
    without = await claimed_event(repository, tag, key=f"{tag}-unknown")
    keyless = await claimed_event(repository, tag, key=None)
    assert with_conversation.conversation == conversation
    assert without.conversation is None
    assert keyless.conversation is None
    # Otherwise the claimed event is the stored one.
    stored = await repository.get_inbox_event(with_conversation.id)
    assert stored == with_conversation.model_copy(update={"conversation": None})


async def test_record_inbound_with_replies(repository: WhatsAppRepository, tag: str) -> None:
    conversation = await conversation_of(repository, f"{tag}-kc")
    wamid = f"wamid.{tag}"
    replies = [reply(conversation, f"{tag}:1/2", "uno"), reply(conversation, f"{tag}:2/2", "dos")]

    first = await repository.record_inbound_with_replies(
        user_message(conversation, wamid), replies, count_first_attempt=True
    )
    assert first.message.created is True
    assert first.message.message.content == "hola"
    assert [r.created for r in first.replies] == [True, True]
    assert [r.message.content for r in first.replies] == ["uno", "dos"]
    # The first is ready to send: its attempt is counted; the second is not.
    assert first.replies[0].message.send_attempts == 1
    assert first.replies[0].message.last_attempt_at is not None
    assert first.replies[1].message.send_attempts == 0
    assert first.replies[1].message.last_attempt_at is None
    assert all(r.message.status is OutboundStatus.PENDING for r in first.replies)
    assert await repository.get_outbound(first.replies[0].message.id) == first.replies[0].message
    assert await repository.find_message_by_wamid(wamid) == first.message.message

    # Again (a retry): nothing new, and no attempt counted on the existing row.
    again = await repository.record_inbound_with_replies(
        user_message(conversation, wamid), replies, count_first_attempt=True
    )
    assert again.message.created is False
    assert again.message.message == first.message.message
    assert [r.created for r in again.replies] == [False, False]
    assert [r.message for r in again.replies] == [r.message for r in first.replies]

    # Without counting, and with no replies at all.
    other = await repository.record_inbound_with_replies(
        user_message(conversation, f"{wamid}-b"),
        [reply(conversation, f"{tag}:b", "tres")],
        count_first_attempt=False,
    )
    assert other.replies[0].message.send_attempts == 0
    alone = await repository.record_inbound_with_replies(
        user_message(conversation, f"{wamid}-c"), [], count_first_attempt=True
    )
    assert alone.message.created is True
    assert alone.replies == []


async def test_record_inbound_with_replies_is_one_transaction(
    repository: WhatsAppRepository, tag: str
) -> None:
    conversation = await conversation_of(repository, f"{tag}-kc")
    wamid = f"wamid.{tag}"
    broken = reply(conversation, f"{tag}:2", "dos").model_copy(
        update={"conversation_id": uuid.uuid4()}
    )
    with pytest.raises(StoreConstraintError):
        await repository.record_inbound_with_replies(
            user_message(conversation, wamid),
            [reply(conversation, f"{tag}:1", "uno"), broken],
            count_first_attempt=True,
        )
    # Nothing of it stayed: neither the message nor the first reply.
    assert await repository.find_message_by_wamid(wamid) is None
    assert await repository.find_outbound_by_idempotency_key(f"{tag}:1", user_id=None) is None


async def test_record_sent_settles_stores_and_completes(
    repository: WhatsAppRepository, tag: str
) -> None:
    conversation = await conversation_of(repository, f"{tag}-kc")
    event = await claimed_event(repository, tag, key=f"{tag}-kc", owner="w1")
    [recorded] = (
        await repository.record_inbound_with_replies(
            user_message(conversation, f"wamid.{tag}-in"),
            [reply(conversation, f"{tag}:1", "¡Hola!")],
            count_first_attempt=True,
        )
    ).replies
    outbound_id = recorded.message.id
    stored_copy = NewMessage(
        conversation_id=conversation.id,
        role=MessageRole.ASSISTANT,
        content="¡Hola!",
        metadata=MessageMetadata(
            channel="whatsapp", whatsapp_message_id=f"wamid.{tag}-out", outbound_id=outbound_id
        ),
    )

    result = await repository.record_sent(
        outbound_id,
        wamid=f"wamid.{tag}-out",
        message=stored_copy,
        complete=InboxLease(event_id=event.id, owner="w1"),
    )
    assert result.change is not None
    assert result.change.changed is True
    assert result.change.message.status is OutboundStatus.SENT
    assert result.change.message.wamid == f"wamid.{tag}-out"
    assert result.message is not None
    assert result.message.created is True
    assert result.message.message.role is MessageRole.ASSISTANT
    assert await repository.find_message_by_wamid(f"wamid.{tag}-out") == result.message.message
    assert result.completed is not None
    assert result.completed.state is InboxState.DONE
    assert await repository.get_inbox_event(event.id) == result.completed

    # Repeated (e.g. after a lost answer): nothing changes, nothing is stored twice.
    again = await repository.record_sent(
        outbound_id,
        wamid=f"wamid.{tag}-out",
        message=stored_copy,
        complete=InboxLease(event_id=event.id, owner="w1"),
    )
    assert again.change is not None
    assert again.change.changed is False
    assert again.message is not None
    assert again.message.created is False
    assert again.completed is None


async def test_record_sent_respects_lease_and_status(
    repository: WhatsAppRepository, tag: str
) -> None:
    conversation = await conversation_of(repository, f"{tag}-kc")
    event = await claimed_event(repository, tag, key=f"{tag}-kc", owner="w1")
    [failed, plain] = (
        await repository.record_inbound_with_replies(
            user_message(conversation, f"wamid.{tag}-in"),
            [reply(conversation, f"{tag}:1", "uno"), reply(conversation, f"{tag}:2", "dos")],
            count_first_attempt=False,
        )
    ).replies
    await repository.advance_outbound_status(failed.message.id, OutboundStatus.FAILED)

    def copy(wamid: str) -> NewMessage:
        return NewMessage(
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            content="uno",
            metadata=MessageMetadata(channel="whatsapp", whatsapp_message_id=wamid),
        )

    # A failed message stays failed and is not stored; another worker's lease is not completed.
    result = await repository.record_sent(
        failed.message.id,
        wamid=f"wamid.{tag}-1",
        message=copy(f"wamid.{tag}-1"),
        complete=InboxLease(event_id=event.id, owner="someone-else"),
    )
    assert result.change is not None
    assert result.change.message.status is OutboundStatus.FAILED
    assert result.message is None
    assert result.completed is None
    assert await repository.find_message_by_wamid(f"wamid.{tag}-1") is None
    held = await repository.get_inbox_event(event.id)
    assert held is not None
    assert held.state is InboxState.PROCESSING

    # Without a message or a completion, only the status moves.
    bare = await repository.record_sent(plain.message.id, wamid=f"wamid.{tag}-2")
    assert bare.change is not None
    assert bare.change.message.status is OutboundStatus.SENT
    assert bare.message is None
    assert bare.completed is None

    # No such outbound message: nothing to change, nothing stored.
    missing = await repository.record_sent(
        uuid.uuid4(), wamid=f"wamid.{tag}-3", message=copy(f"wamid.{tag}-3")
    )
    assert missing.change is None
    assert missing.message is None
    assert await repository.find_message_by_wamid(f"wamid.{tag}-3") is None
