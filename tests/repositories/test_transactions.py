"""Several store calls in one `database.transaction()`: the steps of the flow that write more
than one thing (the user's message with its reply parts; a send's status with its stored copy
and the event's completion) commit together or not at all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.dev_seed import DirectorySeeder
from app.repositories.errors import StoreConstraintError, StoreError
from app.repositories.models import (
    Conversation,
    InboxEvent,
    InboxState,
    MessageMetadata,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    OutboundStatus,
    WhatsAppConversationMetadata,
)
from app.repositories.stores import Stores
from repositories.conftest import StoresFactory
from support.store_data import make_member, unique_phone

RECEIVED = "whatsapp.message.received"


class StepInterruptedError(Exception):
    """A failure inside the block after some writes (a bug, a cancelled task)."""


async def conversation_of(stores: Stores, seeder: DirectorySeeder, kapso_id: str) -> Conversation:
    profile, company = await make_member(seeder)
    result = await stores.conversations.get_or_create_conversation(
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


async def claimed_event(stores: Stores, tag: str, key: str, owner: str = "w1") -> InboxEvent:
    await stores.inbox.record_inbox_events(
        [
            NewInboxEvent(
                idempotency_key=f"{tag}-{key}",
                event=RECEIVED,
                conversation_key=key,
                payload={"tag": tag},
            )
        ]
    )
    [claimed] = await stores.inbox.claim_inbox_events(
        owner=owner, limit=50, lease_seconds=30, max_attempts=3
    )
    return claimed


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


def stored_copy(conversation: Conversation, wamid: str, outbound_id: uuid.UUID) -> NewMessage:
    return NewMessage(
        conversation_id=conversation.id,
        role=MessageRole.ASSISTANT,
        content="¡Hola!",
        metadata=MessageMetadata(
            channel="whatsapp", whatsapp_message_id=wamid, outbound_id=outbound_id
        ),
    )


async def test_the_inbound_message_and_its_replies_commit_together(
    stores: Stores, seeder: DirectorySeeder, open_stores: StoresFactory, tag: str
) -> None:
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    other = await open_stores()
    wamid = f"wamid.{tag}"
    async with stores.database.transaction() as tx:
        message = await stores.conversations.append_message(
            user_message(conversation, wamid), tx=tx
        )
        first = await stores.outbound.record_outbound(
            reply(conversation, f"{tag}:1/2", "uno"), tx=tx
        )
        second = await stores.outbound.record_outbound(
            reply(conversation, f"{tag}:2/2", "dos"), tx=tx
        )
        counted = await stores.outbound.mark_outbound_attempt(first.message.id, tx=tx)
        assert counted.send_attempts == 1
        # Nothing is visible to another process before the commit.
        assert await other.conversations.find_message_by_wamid(wamid) is None
        assert await other.outbound.get_outbound(first.message.id) is None

    assert message.created is True
    assert [first.created, second.created] == [True, True]
    assert await other.conversations.find_message_by_wamid(wamid) == message.message
    stored_first = await other.outbound.get_outbound(first.message.id)
    assert stored_first == counted
    assert await other.outbound.get_outbound(second.message.id) == second.message

    # Again (a retry): nothing new, the same rows.
    async with stores.database.transaction() as tx:
        again = await stores.conversations.append_message(user_message(conversation, wamid), tx=tx)
        repeated = await stores.outbound.record_outbound(
            reply(conversation, f"{tag}:1/2", "uno"), tx=tx
        )
    assert again.created is False
    assert again.message == message.message
    assert repeated.created is False
    assert repeated.message == counted


async def test_an_exception_in_the_block_keeps_neither_the_message_nor_the_replies(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    wamid = f"wamid.{tag}"
    recorded: list[uuid.UUID] = []

    async def step() -> None:
        async with stores.database.transaction() as tx:
            await stores.conversations.append_message(user_message(conversation, wamid), tx=tx)
            result = await stores.outbound.record_outbound(
                reply(conversation, f"{tag}:1", "uno"), tx=tx
            )
            await stores.outbound.mark_outbound_attempt(result.message.id, tx=tx)
            recorded.append(result.message.id)
            raise StepInterruptedError

    with pytest.raises(StepInterruptedError):
        await step()
    assert await stores.conversations.find_message_by_wamid(wamid) is None
    assert await stores.outbound.find_outbound_by_idempotency_key(f"{tag}:1", user_id=None) is None
    assert await stores.outbound.get_outbound(recorded[0]) is None
    assert await stores.conversations.list_messages(conversation.id) == []


async def test_a_store_error_in_the_block_keeps_nothing_of_it(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    wamid = f"wamid.{tag}"
    broken = reply(conversation, f"{tag}:2", "dos").model_copy(
        update={"conversation_id": uuid.uuid4()}
    )

    async def step() -> None:
        async with stores.database.transaction() as tx:
            await stores.conversations.append_message(user_message(conversation, wamid), tx=tx)
            await stores.outbound.record_outbound(reply(conversation, f"{tag}:1", "uno"), tx=tx)
            await stores.outbound.record_outbound(broken, tx=tx)

    with pytest.raises(StoreConstraintError):
        await step()
    # Nothing of it stayed: neither the message nor the first reply.
    assert await stores.conversations.find_message_by_wamid(wamid) is None
    assert await stores.outbound.find_outbound_by_idempotency_key(f"{tag}:1", user_id=None) is None


async def test_a_store_error_caught_in_the_block_does_not_commit_half_of_it(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    """PostgreSQL aborts a transaction at its first error: a caller that catches the error
    and carries on must not believe the rest was committed."""
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    wamid = f"wamid.{tag}"
    broken = reply(conversation, f"{tag}:1", "uno").model_copy(update={"company_id": uuid.uuid4()})

    async def step() -> None:
        async with stores.database.transaction() as tx:
            await stores.conversations.append_message(user_message(conversation, wamid), tx=tx)
            with pytest.raises(StoreConstraintError):
                await stores.outbound.record_outbound(broken, tx=tx)
            await stores.outbound.record_outbound(reply(conversation, f"{tag}:2", "dos"), tx=tx)

    with pytest.raises(StoreError):
        await step()
    assert await stores.conversations.find_message_by_wamid(wamid) is None
    assert await stores.outbound.find_outbound_by_idempotency_key(f"{tag}:2", user_id=None) is None


async def test_a_block_that_swallows_a_store_error_is_told_nothing_was_committed(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    """Caught and the block ended normally: the commit rolls back, and says so."""
    conversation = await conversation_of(stores, seeder, f"{tag}-ks")
    wamid = f"wamid.{tag}"
    broken = reply(conversation, f"{tag}:1", "uno").model_copy(update={"company_id": uuid.uuid4()})

    async def swallowing_step() -> None:
        async with stores.database.transaction() as tx:
            await stores.conversations.append_message(user_message(conversation, wamid), tx=tx)
            with pytest.raises(StoreConstraintError):
                await stores.outbound.record_outbound(broken, tx=tx)

    with pytest.raises(StoreError, match="rolled back"):
        await swallowing_step()
    assert await stores.conversations.find_message_by_wamid(wamid) is None


async def test_a_send_its_copy_and_the_completion_commit_together(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    event = await claimed_event(stores, tag, f"{tag}-kc", owner="w1")
    recorded = (
        await stores.outbound.record_outbound(reply(conversation, f"{tag}:1", "¡Hola!"))
    ).message
    wamid = f"wamid.{tag}-out"

    async with stores.database.transaction() as tx:
        change = await stores.outbound.advance_outbound_status(
            recorded.id, OutboundStatus.SENT, wamid=wamid, tx=tx
        )
        copy = await stores.conversations.append_message(
            stored_copy(conversation, wamid, recorded.id), tx=tx
        )
        completed = await stores.inbox.complete_inbox_event(event.id, owner="w1", tx=tx)

    assert change is not None
    assert change.changed is True
    assert change.message.status is OutboundStatus.SENT
    assert change.message.wamid == wamid
    assert copy.created is True
    assert copy.message.role is MessageRole.ASSISTANT
    assert copy.message.metadata.outbound_id == recorded.id
    assert await stores.conversations.find_message_by_wamid(wamid) == copy.message
    assert completed is not None
    assert completed.state is InboxState.DONE
    assert await stores.inbox.get_inbox_event(event.id) == completed
    assert await stores.outbound.find_outbound_by_wamid(wamid) == change.message

    # Repeated (e.g. after a lost answer): nothing changes, nothing is stored twice.
    async with stores.database.transaction() as tx:
        again = await stores.outbound.advance_outbound_status(
            recorded.id, OutboundStatus.SENT, wamid=wamid, tx=tx
        )
        copy_again = await stores.conversations.append_message(
            stored_copy(conversation, wamid, recorded.id), tx=tx
        )
        completed_again = await stores.inbox.complete_inbox_event(event.id, owner="w1", tx=tx)
    assert again is not None
    assert again.changed is False
    assert copy_again.created is False
    assert completed_again is None


async def test_a_failed_send_step_rolls_back_the_status_the_copy_and_the_completion(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    event = await claimed_event(stores, tag, f"{tag}-kc", owner="w1")
    recorded = (
        await stores.outbound.record_outbound(reply(conversation, f"{tag}:1", "¡Hola!"))
    ).message
    wamid = f"wamid.{tag}-out"

    async def step() -> None:
        async with stores.database.transaction() as tx:
            await stores.outbound.advance_outbound_status(
                recorded.id, OutboundStatus.SENT, wamid=wamid, tx=tx
            )
            await stores.conversations.append_message(
                stored_copy(conversation, wamid, recorded.id), tx=tx
            )
            assert await stores.inbox.complete_inbox_event(event.id, owner="w1", tx=tx)
            raise StepInterruptedError

    with pytest.raises(StepInterruptedError):
        await step()

    outbound = await stores.outbound.get_outbound(recorded.id)
    assert outbound == recorded
    assert outbound.status is OutboundStatus.PENDING
    assert await stores.outbound.find_outbound_by_wamid(wamid) is None
    assert await stores.conversations.find_message_by_wamid(wamid) is None
    held = await stores.inbox.get_inbox_event(event.id)
    assert held is not None
    assert held.state is InboxState.PROCESSING
    assert held.lease_owner == "w1"
    # The conversation's queue still waits for it.
    assert (
        await stores.inbox.claim_inbox_events(
            owner="w2", limit=10, lease_seconds=30, max_attempts=3
        )
        == []
    )


async def test_a_failed_send_is_not_stored_and_another_lease_is_not_completed(
    stores: Stores, seeder: DirectorySeeder, tag: str
) -> None:
    """The step's own rules inside the transaction: a failed message stays failed (no copy
    is stored for it), and an event leased to someone else is not completed."""
    conversation = await conversation_of(stores, seeder, f"{tag}-kc")
    event = await claimed_event(stores, tag, f"{tag}-kc", owner="w1")
    failed = (await stores.outbound.record_outbound(reply(conversation, f"{tag}:1", "uno"))).message
    await stores.outbound.advance_outbound_status(failed.id, OutboundStatus.FAILED)

    async with stores.database.transaction() as tx:
        change = await stores.outbound.advance_outbound_status(
            failed.id, OutboundStatus.SENT, wamid=f"wamid.{tag}-1", tx=tx
        )
        completed = await stores.inbox.complete_inbox_event(event.id, owner="someone-else", tx=tx)
    assert change is not None
    assert change.changed is True  # the wamid, learned late, is kept
    assert change.message.status is OutboundStatus.FAILED
    assert completed is None
    held = await stores.inbox.get_inbox_event(event.id)
    assert held is not None
    assert held.state is InboxState.PROCESSING

    # No such outbound message: nothing to change.
    assert (
        await stores.outbound.advance_outbound_status(
            uuid.uuid4(), OutboundStatus.SENT, wamid=f"wamid.{tag}-3"
        )
        is None
    )
