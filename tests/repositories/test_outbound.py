"""Contract: outbound messages — idempotent recording and forward-only status."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.dev_seed import DirectorySeeder
from app.repositories.errors import StoreConstraintError
from app.repositories.models import NewInboxEvent, NewOutboundMessage, OutboundStatus
from app.repositories.outbound import OutboundStore
from app.repositories.stores import Stores
from repositories.conftest import StoresFactory
from support.store_data import make_member, unique_phone


@pytest.fixture
def store(stores: Stores) -> OutboundStore:
    return stores.outbound


def outbound(**fields: object) -> NewOutboundMessage:
    values: dict[str, object] = {
        "to_phone": unique_phone(),
        "message_type": "text",
        "purpose": "reply",
    }
    values.update(fields)
    return NewOutboundMessage.model_validate(values)


async def test_record_and_find(store: OutboundStore, seeder: DirectorySeeder) -> None:
    profile, company = await make_member(seeder)
    phone = unique_phone()
    key = f"key-{uuid.uuid4()}"
    recorded = await store.record_outbound(
        outbound(
            to_phone=phone.removeprefix("+"),
            company_id=company.id,
            user_id=profile.id,
            kapso_conversation_id="kc-1",
            business_phone_number_id="pn-1",
            purpose="api",
            idempotency_key=key,
            request_fingerprint="sha256:abc",
        )
    )
    assert recorded.created is True
    message = recorded.message
    assert message.status is OutboundStatus.PENDING
    assert message.to_phone == phone  # normalised
    assert message.wamid is None

    assert await store.get_outbound(message.id) == message
    assert await store.get_outbound(uuid.uuid4()) is None
    found = await store.find_outbound_by_idempotency_key(key, user_id=profile.id)
    assert found == message
    # Keys are per user: another user (or the service itself) has its own key space.
    assert await store.find_outbound_by_idempotency_key(key, user_id=uuid.uuid4()) is None
    assert await store.find_outbound_by_idempotency_key(key, user_id=None) is None

    service = await store.record_outbound(outbound(idempotency_key=key))
    assert service.created is True
    assert await store.find_outbound_by_idempotency_key(key, user_id=None) == service.message


async def test_same_idempotency_key_records_once_concurrently(
    open_stores: StoresFactory, seeder: DirectorySeeder
) -> None:
    pools = [(await open_stores()).outbound for _ in range(4)]
    profile, _ = await make_member(seeder)
    request = outbound(user_id=profile.id, idempotency_key=f"key-{uuid.uuid4()}")
    results = await asyncio.gather(*(pools[i % 4].record_outbound(request) for i in range(20)))
    assert sum(result.created for result in results) == 1
    assert len({result.message.id for result in results}) == 1


async def test_status_moves_forward_only(store: OutboundStore) -> None:
    message = (await store.record_outbound(outbound())).message
    wamid = f"wamid.{uuid.uuid4()}"

    sent = await store.advance_outbound_status(message.id, OutboundStatus.SENT, wamid=wamid)
    assert sent is not None
    assert sent.changed is True
    assert sent.message.status is OutboundStatus.SENT
    assert sent.message.wamid == wamid
    assert sent.previous_status is OutboundStatus.PENDING
    assert await store.find_outbound_by_wamid(wamid) == sent.message

    # Webhooks arrive out of order: read before delivered.
    read = await store.advance_outbound_status_by_wamid(wamid, OutboundStatus.READ)
    assert read is not None
    assert read.changed is True
    assert read.message.status is OutboundStatus.READ
    assert read.previous_status is OutboundStatus.SENT
    late = await store.advance_outbound_status_by_wamid(wamid, OutboundStatus.DELIVERED)
    assert late is not None
    assert late.changed is False
    assert late.message.status is OutboundStatus.READ
    assert late.previous_status is OutboundStatus.READ
    failed_after_read = await store.advance_outbound_status_by_wamid(
        wamid, OutboundStatus.FAILED, error_code="131047"
    )
    assert failed_after_read is not None
    assert failed_after_read.changed is False
    same = await store.advance_outbound_status_by_wamid(wamid, OutboundStatus.READ)
    assert same is not None
    assert same.changed is False

    assert (
        await store.advance_outbound_status_by_wamid("wamid.unknown", OutboundStatus.READ) is None
    )
    assert await store.advance_outbound_status(uuid.uuid4(), OutboundStatus.SENT) is None


async def test_failed_is_final_and_keeps_the_error(store: OutboundStore) -> None:
    message = (await store.record_outbound(outbound())).message
    failed = await store.advance_outbound_status(
        message.id,
        OutboundStatus.FAILED,
        error_code="131047",
        error_message="Re-engagement message",
    )
    assert failed is not None
    assert failed.changed is True
    assert failed.message.status is OutboundStatus.FAILED
    assert failed.message.error_code == "131047"
    assert failed.message.error_message == "Re-engagement message"
    for later in (OutboundStatus.SENT, OutboundStatus.DELIVERED, OutboundStatus.READ):
        change = await store.advance_outbound_status(message.id, later)
        assert change is not None
        assert change.changed is False
        assert change.message.status is OutboundStatus.FAILED


async def test_unknown_outcome_then_settled_by_webhook(store: OutboundStore) -> None:
    """A timed-out send is `unknown`; its wamid arrives later and status webhooks settle it."""
    message = (await store.record_outbound(outbound())).message
    unknown = await store.advance_outbound_status(
        message.id, OutboundStatus.UNKNOWN, error_message="timeout after the request went out"
    )
    assert unknown is not None
    assert unknown.message.status is OutboundStatus.UNKNOWN
    wamid = f"wamid.{uuid.uuid4()}"
    # The wamid alone can be set without changing the status.
    with_wamid = await store.advance_outbound_status(
        message.id, OutboundStatus.UNKNOWN, wamid=wamid
    )
    assert with_wamid is not None
    assert with_wamid.changed is True
    assert with_wamid.message.wamid == wamid
    delivered = await store.advance_outbound_status_by_wamid(wamid, OutboundStatus.DELIVERED)
    assert delivered is not None
    assert delivered.message.status is OutboundStatus.DELIVERED


async def test_same_wamid_recorded_once(store: OutboundStore) -> None:
    wamid = f"wamid.{uuid.uuid4()}"
    first = await store.record_outbound(outbound(wamid=wamid, status=OutboundStatus.SENT))
    second = await store.record_outbound(outbound(wamid=wamid, purpose="manual"))
    assert first.created is True
    assert second.created is False
    assert second.message.id == first.message.id


async def test_latest_outbound_to_a_number_by_purpose(store: OutboundStore) -> None:
    phone = unique_phone()
    assert await store.find_latest_outbound_to(phone, purpose="registration") is None
    await store.record_outbound(outbound(to_phone=phone, purpose="registration"))
    second = await store.record_outbound(outbound(to_phone=phone, purpose="registration"))
    await store.record_outbound(outbound(to_phone=phone, purpose="reply"))
    latest = await store.find_latest_outbound_to(phone.removeprefix("+"), purpose="registration")
    assert latest is not None
    assert latest.id == second.message.id


@pytest.mark.parametrize("field", ["company_id", "conversation_id"])
async def test_unknown_reference_is_a_constraint_error(store: OutboundStore, field: str) -> None:
    with pytest.raises(StoreConstraintError):
        await store.record_outbound(outbound(**{field: uuid.uuid4()}))


async def test_content_and_send_attempts(store: OutboundStore) -> None:
    message = (await store.record_outbound(outbound(content="¡Hola!"))).message
    assert message.content == "¡Hola!"
    assert message.send_attempts == 0
    assert message.last_attempt_at is None
    first = await store.mark_outbound_attempt(message.id)
    second = await store.mark_outbound_attempt(message.id)
    assert first.send_attempts == 1
    assert second.send_attempts == 2
    assert first.last_attempt_at is not None
    assert second.last_attempt_at is not None
    assert second.last_attempt_at >= first.last_attempt_at
    assert second.status is OutboundStatus.PENDING
    assert await store.get_outbound(message.id) == second

    with pytest.raises(StoreConstraintError):
        await store.mark_outbound_attempt(uuid.uuid4())


async def test_outbound_of_an_inbox_event(stores: Stores, tag: str) -> None:
    store = stores.outbound
    [recorded] = await stores.inbox.record_inbox_events(
        [NewInboxEvent(idempotency_key=f"{tag}-in", event="whatsapp.message.received", payload={})]
    )
    event_id = recorded.event_id
    parts = [
        await store.record_outbound(
            outbound(inbox_event_id=event_id, content=f"part {i}", idempotency_key=f"{tag}:{i}")
        )
        for i in range(2)
    ]
    await store.record_outbound(outbound(content="unrelated"))
    listed = await store.list_outbound_for_inbox_event(event_id)
    assert [m.id for m in listed] == [p.message.id for p in parts]
    assert [m.content for m in listed] == ["part 0", "part 1"]
    assert await store.list_outbound_for_inbox_event(uuid.uuid4()) == []


async def test_same_wamid_records_once_concurrently(open_stores: StoresFactory) -> None:
    pools = [(await open_stores()).outbound for _ in range(4)]
    wamid = f"wamid.{uuid.uuid4()}"
    results = await asyncio.gather(
        *(
            pools[i % 4].record_outbound(
                outbound(wamid=wamid, status=OutboundStatus.SENT, purpose="manual")
            )
            for i in range(20)
        )
    )
    assert sum(result.created for result in results) == 1
    assert len({result.message.id for result in results}) == 1


async def test_failed_only_before_delivery(store: OutboundStore) -> None:
    sent = (await store.record_outbound(outbound(status=OutboundStatus.SENT))).message
    change = await store.advance_outbound_status(sent.id, OutboundStatus.FAILED, error_code="1")
    assert change is not None
    assert change.changed is True
    assert change.previous_status is OutboundStatus.SENT
    assert change.message.status is OutboundStatus.FAILED

    delivered = (await store.record_outbound(outbound(status=OutboundStatus.DELIVERED))).message
    late = await store.advance_outbound_status(delivered.id, OutboundStatus.FAILED, error_code="2")
    assert late is not None
    assert late.changed is False
    assert late.message.status is OutboundStatus.DELIVERED
    assert late.message.error_code is None


async def test_the_status_trigger_refuses_backward_updates(stores: Stores) -> None:
    """The SQL backstop: even a direct update by another writer cannot move a status back."""
    recorded = (await stores.outbound.record_outbound(outbound())).message
    await stores.outbound.advance_outbound_status(recorded.id, OutboundStatus.DELIVERED)
    with pytest.raises(StoreConstraintError, match="23514"):
        await stores.database.execute(
            "update public.whatsapp_outbound_messages set status = 'sent' where id = $1",
            recorded.id,
        )
    stored = await stores.outbound.get_outbound(recorded.id)
    assert stored is not None
    assert stored.status is OutboundStatus.DELIVERED
