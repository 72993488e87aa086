"""Contract: outbound messages — idempotent recording and forward-only status."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.repositories.models import NewOutboundMessage, OutboundStatus
from app.repositories.whatsapp import WhatsAppRepository
from support.store_data import RepositoryFactory, make_member, unique_phone


def outbound(**fields: object) -> NewOutboundMessage:
    values: dict[str, object] = {
        "to_phone": unique_phone(),
        "message_type": "text",
        "purpose": "reply",
    }
    values.update(fields)
    return NewOutboundMessage.model_validate(values)


async def test_record_and_find(repository: WhatsAppRepository) -> None:
    profile, company = await make_member(repository)
    phone = unique_phone()
    key = f"key-{uuid.uuid4()}"
    recorded = await repository.record_outbound(
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

    assert await repository.get_outbound(message.id) == message
    assert await repository.get_outbound(uuid.uuid4()) is None
    found = await repository.find_outbound_by_idempotency_key(key, user_id=profile.id)
    assert found == message
    # Keys are per user: another user (or the service itself) has its own key space.
    assert await repository.find_outbound_by_idempotency_key(key, user_id=uuid.uuid4()) is None
    assert await repository.find_outbound_by_idempotency_key(key, user_id=None) is None

    service = await repository.record_outbound(outbound(idempotency_key=key))
    assert service.created is True
    assert await repository.find_outbound_by_idempotency_key(key, user_id=None) == service.message


async def test_same_idempotency_key_records_once_concurrently(
    repository_factory: RepositoryFactory,
) -> None:
    repositories = [await repository_factory() for _ in range(4)]
    profile, _ = await make_member(repositories[0])
    request = outbound(user_id=profile.id, idempotency_key=f"key-{uuid.uuid4()}")
    results = await asyncio.gather(
        *(repositories[i % 4].record_outbound(request) for i in range(20))
    )
    assert sum(result.created for result in results) == 1
    assert len({result.message.id for result in results}) == 1


async def test_status_moves_forward_only(repository: WhatsAppRepository) -> None:
    message = (await repository.record_outbound(outbound())).message
    wamid = f"wamid.{uuid.uuid4()}"

    sent = await repository.advance_outbound_status(message.id, OutboundStatus.SENT, wamid=wamid)
    assert sent is not None
    assert sent.changed is True
    assert sent.message.status is OutboundStatus.SENT
    assert sent.message.wamid == wamid
    assert sent.previous_status is OutboundStatus.PENDING
    assert await repository.find_outbound_by_wamid(wamid) == sent.message

    # Webhooks arrive out of order: read before delivered.
    read = await repository.advance_outbound_status_by_wamid(wamid, OutboundStatus.READ)
    assert read is not None
    assert read.changed is True
    assert read.message.status is OutboundStatus.READ
    assert read.previous_status is OutboundStatus.SENT
    late = await repository.advance_outbound_status_by_wamid(wamid, OutboundStatus.DELIVERED)
    assert late is not None
    assert late.changed is False
    assert late.message.status is OutboundStatus.READ
    assert late.previous_status is OutboundStatus.READ
    failed_after_read = await repository.advance_outbound_status_by_wamid(
        wamid, OutboundStatus.FAILED, error_code="131047"
    )
    assert failed_after_read is not None
    assert failed_after_read.changed is False
    same = await repository.advance_outbound_status_by_wamid(wamid, OutboundStatus.READ)
    assert same is not None
    assert same.changed is False

    assert (
        await repository.advance_outbound_status_by_wamid("wamid.unknown", OutboundStatus.READ)
        is None
    )
    assert await repository.advance_outbound_status(uuid.uuid4(), OutboundStatus.SENT) is None


async def test_failed_is_final_and_keeps_the_error(repository: WhatsAppRepository) -> None:
    message = (await repository.record_outbound(outbound())).message
    failed = await repository.advance_outbound_status(
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
        change = await repository.advance_outbound_status(message.id, later)
        assert change is not None
        assert change.changed is False
        assert change.message.status is OutboundStatus.FAILED


async def test_unknown_outcome_then_settled_by_webhook(repository: WhatsAppRepository) -> None:
    """A timed-out send is `unknown`; its wamid arrives later and status webhooks settle it."""
    message = (await repository.record_outbound(outbound())).message
    unknown = await repository.advance_outbound_status(
        message.id, OutboundStatus.UNKNOWN, error_message="timeout after the request went out"
    )
    assert unknown is not None
    assert unknown.message.status is OutboundStatus.UNKNOWN
    wamid = f"wamid.{uuid.uuid4()}"
    # The wamid alone can be set without changing the status.
    with_wamid = await repository.advance_outbound_status(
        message.id, OutboundStatus.UNKNOWN, wamid=wamid
    )
    assert with_wamid is not None
    assert with_wamid.changed is True
    assert with_wamid.message.wamid == wamid
    delivered = await repository.advance_outbound_status_by_wamid(wamid, OutboundStatus.DELIVERED)
    assert delivered is not None
    assert delivered.message.status is OutboundStatus.DELIVERED


async def test_same_wamid_recorded_once(repository: WhatsAppRepository) -> None:
    wamid = f"wamid.{uuid.uuid4()}"
    first = await repository.record_outbound(outbound(wamid=wamid, status=OutboundStatus.SENT))
    second = await repository.record_outbound(outbound(wamid=wamid, purpose="manual"))
    assert first.created is True
    assert second.created is False
    assert second.message.id == first.message.id


async def test_latest_outbound_to_a_number_by_purpose(repository: WhatsAppRepository) -> None:
    phone = unique_phone()
    assert await repository.find_latest_outbound_to(phone, purpose="registration") is None
    await repository.record_outbound(outbound(to_phone=phone, purpose="registration"))
    second = await repository.record_outbound(outbound(to_phone=phone, purpose="registration"))
    await repository.record_outbound(outbound(to_phone=phone, purpose="reply"))
    latest = await repository.find_latest_outbound_to(
        phone.removeprefix("+"), purpose="registration"
    )
    assert latest is not None
    assert latest.id == second.message.id


@pytest.mark.parametrize("field", ["company_id", "conversation_id"])
async def test_unknown_reference_is_a_constraint_error(
    repository: WhatsAppRepository, field: str
) -> None:
    from app.repositories.errors import StoreConstraintError

    with pytest.raises(StoreConstraintError):
        await repository.record_outbound(outbound(**{field: uuid.uuid4()}))


async def test_content_and_send_attempts(repository: WhatsAppRepository) -> None:
    message = (await repository.record_outbound(outbound(content="¡Hola!"))).message
    assert message.content == "¡Hola!"
    assert message.send_attempts == 0
    assert message.last_attempt_at is None
    first = await repository.mark_outbound_attempt(message.id)
    second = await repository.mark_outbound_attempt(message.id)
    assert first.send_attempts == 1
    assert second.send_attempts == 2
    assert first.last_attempt_at is not None
    assert second.last_attempt_at is not None
    assert second.last_attempt_at >= first.last_attempt_at
    assert second.status is OutboundStatus.PENDING
    assert await repository.get_outbound(message.id) == second

    from app.repositories.errors import StoreConstraintError

    with pytest.raises(StoreConstraintError):
        await repository.mark_outbound_attempt(uuid.uuid4())


async def test_outbound_of_an_inbox_event(repository: WhatsAppRepository, tag: str) -> None:
    from app.repositories.models import NewInboxEvent

    [recorded] = await repository.record_inbox_events(
        [NewInboxEvent(idempotency_key=f"{tag}-in", event="whatsapp.message.received", payload={})]
    )
    event_id = recorded.event_id
    parts = [
        await repository.record_outbound(
            outbound(inbox_event_id=event_id, content=f"part {i}", idempotency_key=f"{tag}:{i}")
        )
        for i in range(2)
    ]
    await repository.record_outbound(outbound(content="unrelated"))
    listed = await repository.list_outbound_for_inbox_event(event_id)
    assert [m.id for m in listed] == [p.message.id for p in parts]
    assert [m.content for m in listed] == ["part 0", "part 1"]
    assert await repository.list_outbound_for_inbox_event(uuid.uuid4()) == []


async def test_record_with_the_first_attempt_counted(repository: WhatsAppRepository) -> None:
    key = f"key-{uuid.uuid4()}"
    first = await repository.record_outbound(
        outbound(idempotency_key=key, content="hola"), count_attempt=True
    )
    assert first.created is True
    assert first.message.send_attempts == 1
    assert first.message.last_attempt_at is not None
    assert await repository.get_outbound(first.message.id) == first.message
    # The same key again: the existing row, no attempt counted on it.
    again = await repository.record_outbound(outbound(idempotency_key=key), count_attempt=True)
    assert again.created is False
    assert again.message == first.message
    plain = await repository.record_outbound(outbound(content="sin contar"))
    assert plain.message.send_attempts == 0
