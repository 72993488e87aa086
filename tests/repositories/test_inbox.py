"""Contract: the durable webhook inbox — recording, claiming with leases, order, retries."""

from __future__ import annotations

import asyncio
import uuid

from app.repositories.models import InboxEvent, InboxState, NewInboxEvent
from app.repositories.whatsapp import WhatsAppRepository
from support.store_data import RepositoryFactory

RECEIVED = "whatsapp.message.received"


def event(
    tag: str, name: str, *, conversation: str | None = None, wamid: str | None = None
) -> NewInboxEvent:
    return NewInboxEvent(
        idempotency_key=f"{tag}-{name}",
        event=RECEIVED,
        wamid=wamid,
        conversation_key=f"{tag}-{conversation}" if conversation else None,
        payload={"name": name, "message": {"text": {"body": "hola"}}, "batch": False},
    )


async def claim_mine(
    repository: WhatsAppRepository, tag: str, owner: str, *, limit: int = 50, lease: float = 30
) -> list[InboxEvent]:
    """Claim, keeping only this test's events (a reused stack may hold others')."""
    claimed = await repository.claim_inbox_events(
        owner=owner, limit=limit, lease_seconds=lease, max_attempts=3
    )
    return [e for e in claimed if e.idempotency_key.startswith(tag)]


def names(events: list[InboxEvent]) -> list[str]:
    return [str(e.payload["name"]) for e in events]


async def test_record_reports_new_and_duplicates(repository: WhatsAppRepository, tag: str) -> None:
    first = event(tag, "a", conversation="c1", wamid=f"wamid.{tag}.1")
    results = await repository.record_inbox_events([first, event(tag, "b", conversation="c1")])
    assert [r.is_new for r in results] == [True, True]
    assert [r.idempotency_key for r in results] == [f"{tag}-a", f"{tag}-b"]

    # Same key again; same wamid + event under a new key; a duplicate inside one batch.
    renamed = first.model_copy(update={"idempotency_key": f"{tag}-a-resent"})
    again = await repository.record_inbox_events([first, renamed, event(tag, "c"), event(tag, "c")])
    assert [r.is_new for r in again] == [False, False, True, False]
    assert again[0].event_id == results[0].event_id
    assert again[1].event_id == results[0].event_id
    assert again[2].event_id == again[3].event_id

    # The same wamid with another event name (a status update) is another event.
    status = first.model_copy(
        update={"idempotency_key": f"{tag}-status", "event": "whatsapp.message.delivered"}
    )
    assert [r.is_new for r in await repository.record_inbox_events([status])] == [True]
    assert await repository.record_inbox_events([]) == []

    stored = await repository.get_inbox_event(results[0].event_id)
    assert stored is not None
    assert stored.state is InboxState.PENDING
    assert stored.attempts == 0
    assert stored.payload == first.payload
    assert stored.wamid == first.wamid
    assert stored.conversation_key == f"{tag}-c1"
    assert await repository.get_inbox_event(uuid.uuid4()) is None


async def test_concurrent_duplicates_record_one_event(
    repository_factory: RepositoryFactory, tag: str
) -> None:
    repositories = [await repository_factory() for _ in range(4)]
    same_key = event(tag, "dup", wamid=f"wamid.{tag}")
    results = await asyncio.gather(
        *(repositories[i % 4].record_inbox_events([same_key]) for i in range(20))
    )
    flat = [r for batch in results for r in batch]
    assert sum(r.is_new for r in flat) == 1
    assert len({r.event_id for r in flat}) == 1

    # Twenty copies of one message under twenty different keys (a batch re-sent one by one).
    renamed = [
        same_key.model_copy(update={"idempotency_key": f"{tag}-copy-{i}"}) for i in range(20)
    ]
    results = await asyncio.gather(
        *(repositories[i % 4].record_inbox_events([renamed[i]]) for i in range(20))
    )
    assert not any(r.is_new for batch in results for r in batch)


async def test_claim_complete_and_list(repository: WhatsAppRepository, tag: str) -> None:
    await repository.record_inbox_events([event(tag, "a"), event(tag, "b")])
    claimed = await claim_mine(repository, tag, "worker-1")
    assert names(claimed) == ["a", "b"]
    for item in claimed:
        assert item.state is InboxState.PROCESSING
        assert item.attempts == 1
        assert item.lease_owner == "worker-1"
        assert item.lease_expires_at is not None
    assert await claim_mine(repository, tag, "worker-2") == []

    # Only the lease holder completes.
    assert await repository.complete_inbox_event(claimed[0].id, owner="worker-2") is None
    done = await repository.complete_inbox_event(claimed[0].id, owner="worker-1")
    assert done is not None
    assert done.state is InboxState.DONE
    assert done.completed_at is not None
    assert done.lease_owner is None
    assert await repository.complete_inbox_event(claimed[0].id, owner="worker-1") is None

    listed = await repository.list_inbox_events(InboxState.DONE, limit=500)
    assert claimed[0].id in {e.id for e in listed}
    processing = await repository.list_inbox_events(InboxState.PROCESSING, limit=500)
    assert claimed[1].id in {e.id for e in processing}
    assert await repository.list_inbox_events(InboxState.DONE, limit=0) == []


async def test_claim_respects_limit(repository: WhatsAppRepository, tag: str) -> None:
    await repository.record_inbox_events([event(tag, str(i)) for i in range(5)])
    first = await claim_mine(repository, tag, "w", limit=2)
    assert len(first) <= 2
    rest = await claim_mine(repository, tag, "w", limit=50)
    assert sorted(names(first + rest)) == sorted(str(i) for i in range(5))


async def test_concurrent_claimers_never_share_an_event(
    repository_factory: RepositoryFactory, tag: str
) -> None:
    repositories = [await repository_factory() for _ in range(5)]
    total = 40
    # Half in their own conversations, half without an ordering key.
    await repositories[0].record_inbox_events(
        [event(tag, str(i), conversation=str(i) if i % 2 else None) for i in range(total)]
    )

    async def claimer(index: int) -> list[InboxEvent]:
        mine: list[InboxEvent] = []
        while True:
            batch = await claim_mine(repositories[index], tag, f"worker-{index}", limit=4)
            if not batch:
                return mine
            mine.extend(batch)

    results = await asyncio.gather(*(claimer(i) for i in range(5)))
    ids = [e.id for batch in results for e in batch]
    assert len(ids) == total
    assert len(set(ids)) == total


async def test_expired_lease_gives_the_event_back(repository: WhatsAppRepository, tag: str) -> None:
    await repository.record_inbox_events([event(tag, "a", conversation="c")])
    [first] = await claim_mine(repository, tag, "dead-worker", lease=0.3)
    assert await claim_mine(repository, tag, "other") == []
    await asyncio.sleep(0.6)

    [again] = await claim_mine(repository, tag, "other")
    assert again.id == first.id
    assert again.attempts == 2
    assert again.lease_owner == "other"
    # The worker that lost its lease can no longer complete, fail or extend it.
    assert await repository.complete_inbox_event(first.id, owner="dead-worker") is None
    assert (
        await repository.extend_inbox_lease(first.id, owner="dead-worker", lease_seconds=30) is None
    )
    extended = await repository.extend_inbox_lease(first.id, owner="other", lease_seconds=120)
    assert extended is not None
    assert extended.lease_expires_at is not None
    assert again.lease_expires_at is not None
    assert extended.lease_expires_at > again.lease_expires_at


async def test_expired_lease_on_last_attempt_is_dead(
    repository: WhatsAppRepository, tag: str
) -> None:
    await repository.record_inbox_events([event(tag, "poison")])
    for _ in range(3):
        claimed = await repository.claim_inbox_events(
            owner="w", limit=50, lease_seconds=0.2, max_attempts=3
        )
        assert tag in "".join(e.idempotency_key for e in claimed)
        await asyncio.sleep(0.4)
    assert await claim_mine(repository, tag, "w") == []
    dead = await repository.list_inbox_events(InboxState.DEAD, limit=500)
    [poison] = [e for e in dead if e.idempotency_key == f"{tag}-poison"]
    assert poison.attempts == 3
    assert poison.last_error is not None
    assert "lease expired" in poison.last_error


async def test_one_event_per_conversation_in_arrival_order(
    repository: WhatsAppRepository, tag: str
) -> None:
    await repository.record_inbox_events(
        [
            event(tag, "a1", conversation="A"),
            event(tag, "b1", conversation="B"),
            event(tag, "a2", conversation="A"),
            event(tag, "a3", conversation="A"),
            event(tag, "b2", conversation="B"),
        ]
    )
    first = await claim_mine(repository, tag, "w")
    assert names(first) == ["a1", "b1"]  # the oldest of each conversation, nothing else
    assert await claim_mine(repository, tag, "w") == []  # both conversations in flight

    by_name = {str(e.payload["name"]): e for e in first}
    await repository.complete_inbox_event(by_name["a1"].id, owner="w")
    assert names(await claim_mine(repository, tag, "w")) == ["a2"]

    # b1 fails and waits for its retry: b2 must not overtake it.
    await repository.fail_inbox_event(
        by_name["b1"].id, owner="w", error="boom", retry_delay_seconds=60, max_attempts=5
    )
    assert await claim_mine(repository, tag, "w") == []


async def test_fail_retries_then_dies_and_requeue_replays(
    repository: WhatsAppRepository, tag: str
) -> None:
    await repository.record_inbox_events(
        [event(tag, "x", conversation="c"), event(tag, "y", conversation="c")]
    )
    [x] = await claim_mine(repository, tag, "w")
    retry = await repository.fail_inbox_event(
        x.id, owner="w", error="Kapso 503", retry_delay_seconds=0.0, max_attempts=2
    )
    assert retry is not None
    assert retry.state is InboxState.PENDING
    assert retry.last_error == "Kapso 503"
    assert retry.lease_owner is None
    assert retry.next_attempt_at >= x.next_attempt_at

    [x_again] = await claim_mine(repository, tag, "w")
    assert x_again.id == x.id
    assert x_again.attempts == 2
    dead = await repository.fail_inbox_event(
        x.id, owner="w", error="Kapso 503 again", retry_delay_seconds=0.0, max_attempts=2
    )
    assert dead is not None
    assert dead.state is InboxState.DEAD
    assert dead.last_error == "Kapso 503 again"

    # A dead event no longer holds its conversation back.
    [y] = await claim_mine(repository, tag, "w")
    assert names([y]) == ["y"]
    permanent = await repository.fail_inbox_event(
        y.id, owner="w", error="bad payload", retry_delay_seconds=10, max_attempts=9, permanent=True
    )
    assert permanent is not None
    assert permanent.state is InboxState.DEAD
    # Failing without the lease does nothing.
    assert (
        await repository.fail_inbox_event(
            y.id, owner="w", error="late", retry_delay_seconds=0, max_attempts=9
        )
        is None
    )

    dead_ids = {e.id for e in await repository.list_inbox_events(InboxState.DEAD, limit=500)}
    assert {x.id, y.id} <= dead_ids

    replayed = await repository.requeue_inbox_event(x.id)
    assert replayed is not None
    assert replayed.state is InboxState.PENDING
    assert replayed.attempts == 0
    assert replayed.last_error == "Kapso 503 again"
    assert await repository.requeue_inbox_event(x.id) is None  # not dead any more
    assert await repository.requeue_inbox_event(uuid.uuid4()) is None
    [x_replayed] = await claim_mine(repository, tag, "w")
    assert x_replayed.id == x.id


async def test_backoff_delays_the_next_claim(repository: WhatsAppRepository, tag: str) -> None:
    await repository.record_inbox_events([event(tag, "later")])
    [item] = await claim_mine(repository, tag, "w")
    await repository.fail_inbox_event(
        item.id, owner="w", error="timeout", retry_delay_seconds=0.5, max_attempts=5
    )
    assert await claim_mine(repository, tag, "w") == []
    await asyncio.sleep(0.7)
    assert names(await claim_mine(repository, tag, "w")) == ["later"]


async def test_a_replayed_older_event_waits_for_the_conversations_event_in_flight(
    repository: WhatsAppRepository, tag: str
) -> None:
    """An older event can become unfinished after a newer one of its conversation was claimed
    (here: replayed from dead while the next one runs). It is not handed out beside it."""
    await repository.record_inbox_events(
        [event(tag, "first", conversation="c"), event(tag, "second", conversation="c")]
    )
    [first] = await claim_mine(repository, tag, "w1")
    assert names([first]) == ["first"]
    dead = await repository.fail_inbox_event(
        first.id, owner="w1", error="boom", retry_delay_seconds=0, max_attempts=3, permanent=True
    )
    assert dead is not None
    assert dead.state is InboxState.DEAD
    [second] = await claim_mine(repository, tag, "w1")
    assert names([second]) == ["second"]

    assert await repository.requeue_inbox_event(first.id) is not None
    # The conversation has an event in flight: nothing of it is handed out meanwhile.
    assert await claim_mine(repository, tag, "w2") == []
    assert await repository.complete_inbox_event(second.id, owner="w1") is not None
    assert names(await claim_mine(repository, tag, "w2")) == ["first"]
