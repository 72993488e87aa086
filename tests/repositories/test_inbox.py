"""Contract: the durable webhook inbox — recording, claiming with leases, order, retries."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence

import pytest

from app.db.pool import Database
from app.repositories.errors import StoreUnavailableError
from app.repositories.inbox import InboxStore
from app.repositories.models import InboxEvent, InboxState, NewInboxEvent
from app.repositories.stores import Stores
from repositories.conftest import StoresFactory

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


async def claim(
    inbox: InboxStore,
    owner: str,
    *,
    limit: int = 50,
    lease: float = 30,
    max_attempts: int = 3,
    complete: Sequence[uuid.UUID] = (),
) -> list[InboxEvent]:
    return await inbox.claim_inbox_events(
        owner=owner,
        limit=limit,
        lease_seconds=lease,
        max_attempts=max_attempts,
        complete=complete,
    )


def names(events: Sequence[InboxEvent]) -> list[str]:
    return [str(e.payload["name"]) for e in events]


async def queue_rows(database: Database) -> int:
    row = await database.fetchrow("select count(*) as n from public.whatsapp_inbox_queues")
    assert row is not None
    return int(row["n"])


# --- recording ---------------------------------------------------------------------------


async def test_record_reports_new_and_duplicates(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    first = event(tag, "a", conversation="c1", wamid=f"wamid.{tag}.1")
    results = await inbox.record_inbox_events([first, event(tag, "b", conversation="c1")])
    assert [r.is_new for r in results] == [True, True]
    assert [r.idempotency_key for r in results] == [f"{tag}-a", f"{tag}-b"]

    # Same key again; same wamid + event under a new key; a duplicate inside one batch.
    renamed = first.model_copy(update={"idempotency_key": f"{tag}-a-resent"})
    again = await inbox.record_inbox_events([first, renamed, event(tag, "c"), event(tag, "c")])
    assert [r.is_new for r in again] == [False, False, True, False]
    assert again[0].event_id == results[0].event_id
    assert again[1].event_id == results[0].event_id
    assert again[2].event_id == again[3].event_id

    # The same wamid with another event name (a status update) is another event.
    status = first.model_copy(
        update={"idempotency_key": f"{tag}-status", "event": "whatsapp.message.delivered"}
    )
    assert [r.is_new for r in await inbox.record_inbox_events([status])] == [True]
    assert await inbox.record_inbox_events([]) == []

    stored = await inbox.get_inbox_event(results[0].event_id)
    assert stored is not None
    assert stored.state is InboxState.PENDING
    assert stored.attempts == 0
    assert stored.payload == first.payload
    assert stored.wamid == first.wamid
    assert stored.conversation_key == f"{tag}-c1"
    assert await inbox.get_inbox_event(uuid.uuid4()) is None
    # Arrival order: a later record has a larger seq.
    later = await inbox.get_inbox_event(results[1].event_id)
    assert later is not None
    assert later.seq > stored.seq


async def test_concurrent_duplicates_record_one_event(open_stores: StoresFactory, tag: str) -> None:
    pools = [await open_stores() for _ in range(4)]
    same_key = event(tag, "dup", wamid=f"wamid.{tag}")
    results = await asyncio.gather(
        *(pools[i % 4].inbox.record_inbox_events([same_key]) for i in range(20))
    )
    flat = [r for batch in results for r in batch]
    assert sum(r.is_new for r in flat) == 1
    assert len({r.event_id for r in flat}) == 1

    # Twenty copies of one message under twenty different keys (a batch re-sent one by one).
    renamed = [
        same_key.model_copy(update={"idempotency_key": f"{tag}-copy-{i}"}) for i in range(20)
    ]
    results = await asyncio.gather(
        *(pools[i % 4].inbox.record_inbox_events([renamed[i]]) for i in range(20))
    )
    assert not any(r.is_new for batch in results for r in batch)
    assert {r.event_id for batch in results for r in batch} == {flat[0].event_id}


async def test_the_same_events_recorded_concurrently_are_one_row_each(
    open_stores: StoresFactory, tag: str
) -> None:
    """Retried deliveries reaching several processes at once, overlapping: every event is
    stored once, every caller learns its id, and no caller fails."""
    pools = [await open_stores() for _ in range(6)]
    chooser = random.Random(7)
    events = [
        event(tag, str(i), conversation=str(i % 3), wamid=f"wamid.{tag}.{i}") for i in range(12)
    ]
    deliveries = []
    for _ in range(24):
        start = chooser.randrange(len(events))
        deliveries.append(events[start : start + chooser.randint(1, len(events))])
    results = await asyncio.gather(
        *(pools[i % 6].inbox.record_inbox_events(d) for i, d in enumerate(deliveries))
    )
    ids_by_key: dict[str, set[uuid.UUID]] = {}
    new = 0
    for batch in results:
        for result in batch:
            ids_by_key.setdefault(result.idempotency_key, set()).add(result.event_id)
            new += result.is_new
    recorded = {e.idempotency_key for d in deliveries for e in d}
    assert new == len(recorded)
    assert set(ids_by_key) == recorded
    assert all(len(ids) == 1 for ids in ids_by_key.values())
    row = await pools[0].database.fetchrow("select count(*) as n from public.whatsapp_inbox_events")
    assert row is not None
    assert row["n"] == len(recorded)


async def test_a_write_crossing_another_in_the_opposite_order_still_records(
    stores: Stores, open_stores: StoresFactory, tag: str
) -> None:
    """Two processes writing overlapping events in opposite orders wait for each other's rows:
    PostgreSQL breaks the deadlock by aborting one of them. A webhook delivery (and every other
    delivery sharing its group commit) must not fail for it: the write is retried."""
    other = await open_stores()
    first, second = event(tag, "1", wamid=f"wamid.{tag}.1"), event(tag, "2", wamid=f"wamid.{tag}.2")
    insert = """insert into public.whatsapp_inbox_events (idempotency_key, event, wamid, payload)
                values ($1, $2, $3, $4) on conflict do nothing"""
    holding = asyncio.Event()
    crossing = asyncio.Event()

    async def other_process() -> None:
        # Another writer of the same two events, in the opposite order.
        with contextlib.suppress(StoreUnavailableError):
            async with other.database.transaction() as tx:
                await tx.execute(insert, first.idempotency_key, RECEIVED, first.wamid, {})
                holding.set()
                await crossing.wait()
                await tx.execute(insert, second.idempotency_key, RECEIVED, second.wamid, {})

    async def blocked_writers() -> int:
        row = await other.database.fetchrow(
            """select count(*) from pg_stat_activity
                where wait_event_type = 'Lock' and query like '%whatsapp_inbox_events%'"""
        )
        return int(row[0]) if row else 0

    async def cross_when_blocked() -> None:
        for _ in range(1000):
            if await blocked_writers():
                break
            await asyncio.sleep(0.01)
        crossing.set()

    background = asyncio.create_task(other_process())
    await holding.wait()
    crosser = asyncio.create_task(cross_when_blocked())
    try:
        results = await asyncio.wait_for(stores.inbox.record_inbox_events([second, first]), 20)
    finally:
        crossing.set()
        await crosser
        await background
    assert [r.idempotency_key for r in results] == [second.idempotency_key, first.idempotency_key]
    for result in results:
        stored = await stores.inbox.get_inbox_event(result.event_id)
        assert stored is not None
        assert stored.idempotency_key == result.idempotency_key
    row = await stores.database.fetchrow("select count(*) from public.whatsapp_inbox_events")
    assert row is not None
    assert row[0] == 2


# --- claiming ----------------------------------------------------------------------------


async def test_claim_complete_and_list(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events([event(tag, "a"), event(tag, "b")])
    claimed = await claim(inbox, "worker-1")
    assert names(claimed) == ["a", "b"]
    for item in claimed:
        assert item.state is InboxState.PROCESSING
        assert item.attempts == 1
        assert item.lease_owner == "worker-1"
        assert item.lease_expires_at is not None
    assert await claim(inbox, "worker-2") == []

    # Only the lease holder completes.
    assert await inbox.complete_inbox_event(claimed[0].id, owner="worker-2") is None
    done = await inbox.complete_inbox_event(claimed[0].id, owner="worker-1")
    assert done is not None
    assert done.state is InboxState.DONE
    assert done.completed_at is not None
    assert done.lease_owner is None
    assert await inbox.complete_inbox_event(claimed[0].id, owner="worker-1") is None

    listed = await inbox.list_inbox_events(InboxState.DONE, limit=500)
    assert [e.id for e in listed] == [claimed[0].id]
    processing = await inbox.list_inbox_events(InboxState.PROCESSING, limit=500)
    assert [e.id for e in processing] == [claimed[1].id]
    assert await inbox.list_inbox_events(InboxState.DONE, limit=0) == []


async def test_list_is_newest_first_and_paginated(stores: Stores, tag: str) -> None:
    for name in ("old", "mid", "new"):
        await stores.inbox.record_inbox_events([event(tag, name)])
    listed = await stores.inbox.list_inbox_events(InboxState.PENDING)
    assert names(listed) == ["new", "mid", "old"]
    page = await stores.inbox.list_inbox_events(InboxState.PENDING, limit=1, offset=1)
    assert names(page) == ["mid"]


async def test_claim_respects_limit(stores: Stores, tag: str) -> None:
    await stores.inbox.record_inbox_events([event(tag, str(i)) for i in range(5)])
    first = await claim(stores.inbox, "w", limit=2)
    assert len(first) == 2
    assert await claim(stores.inbox, "w", limit=0) == []
    rest = await claim(stores.inbox, "w", limit=50)
    assert sorted(names(first + rest)) == sorted(str(i) for i in range(5))


async def test_concurrent_claimers_never_share_an_event(
    open_stores: StoresFactory, tag: str
) -> None:
    pools = [await open_stores() for _ in range(5)]
    total = 40
    # Half in their own conversations, half without an ordering key.
    await pools[0].inbox.record_inbox_events(
        [event(tag, str(i), conversation=str(i) if i % 2 else None) for i in range(total)]
    )

    async def claimer(index: int) -> list[InboxEvent]:
        mine: list[InboxEvent] = []
        while True:
            batch = await claim(pools[index].inbox, f"worker-{index}", limit=4)
            if not batch:
                return mine
            mine.extend(batch)

    results = await asyncio.gather(*(claimer(i) for i in range(5)))
    ids = [e.id for batch in results for e in batch]
    assert len(ids) == total
    assert len(set(ids)) == total
    for index, batch in enumerate(results):
        assert all(e.lease_owner == f"worker-{index}" for e in batch)


async def test_concurrent_claimers_on_one_conversation_get_one_event_at_a_time(
    open_stores: StoresFactory, tag: str
) -> None:
    pools = [await open_stores() for _ in range(5)]
    await pools[0].inbox.record_inbox_events(
        [event(tag, str(i), conversation="only") for i in range(5)]
    )
    results = await asyncio.gather(*(claim(p.inbox, f"w{i}") for i, p in enumerate(pools)))
    assert sorted(names([e for batch in results for e in batch])) == ["0"]


async def test_a_claim_brings_the_conversation_of_its_key(
    stores: Stores, seeder: object, tag: str
) -> None:
    from datetime import UTC, datetime

    from app.dev_seed import DirectorySeeder
    from app.repositories.models import WhatsAppConversationMetadata
    from support.store_data import make_member, unique_phone

    assert isinstance(seeder, DirectorySeeder)
    profile, company = await make_member(seeder)
    conversation = (
        await stores.conversations.get_or_create_conversation(
            kapso_conversation_id=f"{tag}-kc",
            user_id=profile.id,
            metadata=WhatsAppConversationMetadata(
                user_id=profile.id,
                company_id=company.id,
                phone_number=unique_phone(),
                resolved_at=datetime.now(UTC),
            ),
        )
    ).conversation
    await stores.inbox.record_inbox_events(
        [
            NewInboxEvent(
                idempotency_key=f"{tag}-1", event=RECEIVED, payload={"name": "known"}
            ).model_copy(update={"conversation_key": f"{tag}-kc"}),
            event(tag, "unknown", conversation="unknown"),
            event(tag, "keyless"),
        ]
    )
    claimed = {str(e.payload["name"]): e for e in await claim(stores.inbox, "w")}
    assert claimed["known"].conversation == conversation
    assert claimed["unknown"].conversation is None
    assert claimed["keyless"].conversation is None
    # Otherwise the claimed event is the stored one.
    stored = await stores.inbox.get_inbox_event(claimed["known"].id)
    assert stored == claimed["known"].model_copy(update={"conversation": None})


# --- leases ------------------------------------------------------------------------------


async def test_expired_lease_gives_the_event_back(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events([event(tag, "a", conversation="c")])
    [first] = await claim(inbox, "dead-worker", lease=0.3)
    assert await claim(inbox, "other") == []
    await asyncio.sleep(0.6)

    [again] = await claim(inbox, "other")
    assert again.id == first.id
    assert again.attempts == 2
    assert again.lease_owner == "other"
    # The worker that lost its lease can no longer complete, fail or extend it.
    assert await inbox.complete_inbox_event(first.id, owner="dead-worker") is None
    assert await inbox.extend_inbox_lease(first.id, owner="dead-worker", lease_seconds=30) is None
    assert (
        await inbox.fail_inbox_event(
            first.id, owner="dead-worker", error="late", retry_delay_seconds=0, max_attempts=9
        )
        is None
    )
    extended = await inbox.extend_inbox_lease(first.id, owner="other", lease_seconds=120)
    assert extended is not None
    assert extended.lease_expires_at is not None
    assert again.lease_expires_at is not None
    assert extended.lease_expires_at > again.lease_expires_at


async def test_an_extended_lease_is_not_handed_out_when_the_first_would_have_expired(
    stores: Stores, tag: str
) -> None:
    await stores.inbox.record_inbox_events([event(tag, "a", conversation="c")])
    [held] = await claim(stores.inbox, "w", lease=0.3)
    assert await stores.inbox.extend_inbox_lease(held.id, owner="w", lease_seconds=30)
    await asyncio.sleep(0.5)
    assert await claim(stores.inbox, "other") == []


async def test_expired_lease_on_last_attempt_is_dead(stores: Stores, tag: str) -> None:
    await stores.inbox.record_inbox_events([event(tag, "poison")])
    for attempt in range(1, 4):
        [claimed] = await claim(stores.inbox, "w", lease=0.2)
        assert claimed.attempts == attempt
        await asyncio.sleep(0.4)
    assert await claim(stores.inbox, "w") == []
    [poison] = await stores.inbox.list_inbox_events(InboxState.DEAD, limit=500)
    assert poison.idempotency_key == f"{tag}-poison"
    assert poison.attempts == 3
    assert poison.lease_owner is None
    assert poison.last_error is not None
    assert "lease expired" in poison.last_error
    assert await queue_rows(stores.database) == 0


async def test_a_lease_expired_on_the_last_attempt_lets_the_queue_move_on(
    stores: Stores, tag: str
) -> None:
    await stores.inbox.record_inbox_events(
        [event(tag, "x", conversation="c"), event(tag, "y", conversation="c")]
    )
    [x] = await claim(stores.inbox, "crashing", lease=0.2, max_attempts=1)
    assert names([x]) == ["x"]
    assert await claim(stores.inbox, "w", max_attempts=1) == []  # x in flight
    await asyncio.sleep(0.4)

    # One claim: x is dead, and y, next in its conversation, is handed out.
    [y] = await claim(stores.inbox, "w", max_attempts=1)
    assert names([y]) == ["y"]
    dead = await stores.inbox.get_inbox_event(x.id)
    assert dead is not None
    assert dead.state is InboxState.DEAD
    assert dead.attempts == 1
    assert dead.last_error is not None
    assert "lease expired" in dead.last_error
    # The crashed worker's late completion changes nothing.
    assert await stores.inbox.complete_inbox_event(x.id, owner="crashing") is None


# --- order -------------------------------------------------------------------------------


async def test_one_event_per_conversation_in_arrival_order(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events(
        [
            event(tag, "a1", conversation="A"),
            event(tag, "b1", conversation="B"),
            event(tag, "a2", conversation="A"),
            event(tag, "a3", conversation="A"),
            event(tag, "b2", conversation="B"),
        ]
    )
    first = await claim(inbox, "w")
    assert names(first) == ["a1", "b1"]  # the oldest of each conversation, nothing else
    assert await claim(inbox, "w") == []  # both conversations in flight

    by_name = {str(e.payload["name"]): e for e in first}
    await inbox.complete_inbox_event(by_name["a1"].id, owner="w")
    assert names(await claim(inbox, "w")) == ["a2"]

    # b1 fails and waits for its retry: b2 must not overtake it.
    await inbox.fail_inbox_event(
        by_name["b1"].id, owner="w", error="boom", retry_delay_seconds=60, max_attempts=5
    )
    assert await claim(inbox, "w") == []


async def test_events_of_a_conversation_recorded_separately_keep_arrival_order(
    stores: Stores, tag: str
) -> None:
    for i in range(4):
        await stores.inbox.record_inbox_events([event(tag, str(i), conversation="c")])
    seen = []
    done: list[uuid.UUID] = []
    for _ in range(4):
        [item] = await claim(stores.inbox, "w", complete=done)
        seen.append(str(item.payload["name"]))
        done = [item.id]
    assert seen == ["0", "1", "2", "3"]


async def test_a_backlog_claims_the_head_of_each_conversation_oldest_first(
    stores: Stores, tag: str
) -> None:
    """Thousands of waiting events: a claim hands out the oldest event of each conversation,
    the conversations that waited longest first, and nothing behind a head."""
    conversations = 200
    per_conversation = 15
    # Each conversation's first event in a transaction of its own: queue k waits since k.
    for k in range(conversations):
        await stores.inbox.record_inbox_events([event(tag, f"{k}-0", conversation=str(k))])
    backlog = [
        event(tag, f"{k}-{n}", conversation=str(k))
        for n in range(1, per_conversation)
        for k in range(conversations)
    ]
    results = await stores.inbox.record_inbox_events(backlog)
    assert all(r.is_new for r in results)

    first = await claim(stores.inbox, "w1", limit=50)
    assert names(first) == [f"{k}-0" for k in range(50)]
    second = await claim(stores.inbox, "w2", limit=50)
    assert names(second) == [f"{k}-0" for k in range(50, 100)]

    # A finished head lets its conversation's next event out, in the same call.
    third = await claim(stores.inbox, "w1", limit=200, complete=[e.id for e in first])
    assert sorted(names(third)) == sorted(
        [f"{k}-0" for k in range(100, 200)] + [f"{k}-1" for k in range(50)]
    )
    # Never two events of one conversation in flight.
    in_flight = await stores.inbox.list_inbox_events(InboxState.PROCESSING, limit=1000)
    keys = [e.conversation_key for e in in_flight]
    assert len(keys) == len(set(keys)) == conversations
    pending = await stores.inbox.list_inbox_events(InboxState.PENDING, limit=5000)
    assert len(pending) == conversations * per_conversation - conversations - 50


async def test_conversations_in_flight_with_new_events_do_not_hide_a_claimable_one(
    stores: Stores, tag: str
) -> None:
    """Users write on while their previous message is processed: those conversations have
    nothing claimable until it finishes. A claim must still hand out what is claimable (here a
    new conversation) at once, however many such conversations wait ahead of it."""
    busy = [f"busy{n}" for n in range(10)]
    await stores.inbox.record_inbox_events([event(tag, f"{c}-1", conversation=c) for c in busy])
    assert len(await claim(stores.inbox, "w1", limit=10)) == 10
    await stores.inbox.record_inbox_events([event(tag, f"{c}-2", conversation=c) for c in busy])
    await stores.inbox.record_inbox_events([event(tag, "new-1", conversation="new")])

    assert names(await claim(stores.inbox, "w2", limit=1)) == ["new-1"]
    assert await claim(stores.inbox, "w2", limit=5) == []


async def test_an_older_event_arriving_while_a_newer_one_is_in_flight_waits(
    stores: Stores, tag: str
) -> None:
    """An event can appear behind the head of its queue with a smaller seq (a transaction that
    took its seq earlier committing later). It waits for the one in flight, then goes first."""
    await stores.inbox.record_inbox_events(
        [event(tag, "newer", conversation="c"), event(tag, "newest", conversation="c")]
    )
    [newer] = await claim(stores.inbox, "w1")
    assert names([newer]) == ["newer"]
    older_id = uuid.uuid4()
    await stores.database.execute(
        """insert into public.whatsapp_inbox_events
             (id, seq, idempotency_key, event, conversation_key, payload)
           overriding system value
           values ($1, $2, $3, $4, $5, $6)""",
        older_id,
        newer.seq - 1_000_000,
        f"{tag}-older",
        RECEIVED,
        f"{tag}-c",
        {"name": "older"},
    )

    # The head is now the older event, but the newer one is in flight: nothing goes out.
    assert await claim(stores.inbox, "w2") == []
    # Only w1 can finish its event (w2's completion of it does nothing).
    assert await claim(stores.inbox, "w2", complete=[newer.id]) == []
    [older] = await claim(stores.inbox, "w1", complete=[newer.id])
    assert older.id == older_id
    # ...and the newest waits for it in turn.
    assert await claim(stores.inbox, "w2") == []
    [newest] = await claim(stores.inbox, "w1", complete=[older.id])
    assert names([newest]) == ["newest"]


async def test_a_replayed_older_event_waits_for_the_conversations_event_in_flight(
    stores: Stores, tag: str
) -> None:
    """An older event can become unfinished after a newer one of its conversation was claimed
    (here: replayed from dead while the next one runs). It is not handed out beside it."""
    inbox = stores.inbox
    await inbox.record_inbox_events(
        [event(tag, "first", conversation="c"), event(tag, "second", conversation="c")]
    )
    [first] = await claim(inbox, "w1")
    assert names([first]) == ["first"]
    dead = await inbox.fail_inbox_event(
        first.id, owner="w1", error="boom", retry_delay_seconds=0, max_attempts=3, permanent=True
    )
    assert dead is not None
    assert dead.state is InboxState.DEAD
    [second] = await claim(inbox, "w1")
    assert names([second]) == ["second"]

    assert await inbox.requeue_inbox_event(first.id) is not None
    # The conversation has an event in flight: nothing of it is handed out meanwhile.
    assert await claim(inbox, "w2") == []
    assert await inbox.complete_inbox_event(second.id, owner="w1") is not None
    assert names(await claim(inbox, "w2")) == ["first"]


# --- completing within a claim -----------------------------------------------------------


async def test_a_claim_completes_the_owners_finished_events_first(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events(
        [event(tag, "a1", conversation="A"), event(tag, "a2", conversation="A")]
    )
    [a1] = await claim(inbox, "w1")
    # Another owner cannot complete w1's event: a2 stays behind it.
    assert await claim(inbox, "w2", complete=[a1.id]) == []
    held = await inbox.get_inbox_event(a1.id)
    assert held is not None
    assert held.state is InboxState.PROCESSING

    [a2] = await claim(inbox, "w1", complete=[a1.id])
    assert names([a2]) == ["a2"]
    done = await inbox.get_inbox_event(a1.id)
    assert done is not None
    assert done.state is InboxState.DONE
    assert done.completed_at is not None
    assert done.lease_owner is None

    # limit=0 only completes (a worker flushing its finished events when it stops).
    assert await claim(inbox, "w1", limit=0, complete=[a2.id]) == []
    flushed = await inbox.get_inbox_event(a2.id)
    assert flushed is not None
    assert flushed.state is InboxState.DONE
    assert await queue_rows(stores.database) == 0


async def test_completing_a_lost_lease_in_a_claim_changes_nothing(stores: Stores, tag: str) -> None:
    await stores.inbox.record_inbox_events([event(tag, "a", conversation="c")])
    [first] = await claim(stores.inbox, "slow", lease=0.2)
    await asyncio.sleep(0.4)
    [again] = await claim(stores.inbox, "fast")
    assert again.id == first.id
    assert await claim(stores.inbox, "slow", complete=[first.id]) == []
    stored = await stores.inbox.get_inbox_event(first.id)
    assert stored is not None
    assert stored.state is InboxState.PROCESSING
    assert stored.lease_owner == "fast"


# --- failures, retries and replays -------------------------------------------------------


async def test_fail_retries_then_dies_and_requeue_replays(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events(
        [event(tag, "x", conversation="c"), event(tag, "y", conversation="c")]
    )
    [x] = await claim(inbox, "w")
    retry = await inbox.fail_inbox_event(
        x.id, owner="w", error="Kapso 503", retry_delay_seconds=0.0, max_attempts=2
    )
    assert retry is not None
    assert retry.state is InboxState.PENDING
    assert retry.last_error == "Kapso 503"
    assert retry.lease_owner is None
    assert retry.lease_expires_at is None
    assert retry.next_attempt_at >= x.next_attempt_at

    [x_again] = await claim(inbox, "w")
    assert x_again.id == x.id
    assert x_again.attempts == 2
    dead = await inbox.fail_inbox_event(
        x.id, owner="w", error="Kapso 503 again", retry_delay_seconds=0.0, max_attempts=2
    )
    assert dead is not None
    assert dead.state is InboxState.DEAD
    assert dead.last_error == "Kapso 503 again"

    # A dead event no longer holds its conversation back.
    [y] = await claim(inbox, "w")
    assert names([y]) == ["y"]
    permanent = await inbox.fail_inbox_event(
        y.id, owner="w", error="bad payload", retry_delay_seconds=10, max_attempts=9, permanent=True
    )
    assert permanent is not None
    assert permanent.state is InboxState.DEAD
    # Failing without the lease does nothing.
    assert (
        await inbox.fail_inbox_event(
            y.id, owner="w", error="late", retry_delay_seconds=0, max_attempts=9
        )
        is None
    )

    dead_ids = {e.id for e in await inbox.list_inbox_events(InboxState.DEAD, limit=500)}
    assert dead_ids == {x.id, y.id}
    assert await queue_rows(stores.database) == 0

    replayed = await inbox.requeue_inbox_event(x.id)
    assert replayed is not None
    assert replayed.state is InboxState.PENDING
    assert replayed.attempts == 0
    assert replayed.last_error == "Kapso 503 again"
    assert await inbox.requeue_inbox_event(x.id) is None  # not dead any more
    assert await inbox.requeue_inbox_event(uuid.uuid4()) is None
    assert await inbox.requeue_inbox_event(y.id) is not None
    # Replayed in their original order.
    [x_replayed] = await claim(inbox, "w")
    assert x_replayed.id == x.id
    assert x_replayed.attempts == 1
    [y_replayed] = await claim(inbox, "w", complete=[x.id])
    assert y_replayed.id == y.id


async def test_a_retry_waits_for_its_delay_and_not_longer(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events([event(tag, "later", conversation="c")])
    [item] = await claim(inbox, "w")
    failed = await inbox.fail_inbox_event(
        item.id, owner="w", error="timeout", retry_delay_seconds=0.6, max_attempts=5
    )
    assert failed is not None
    assert failed.state is InboxState.PENDING
    delay = (failed.next_attempt_at - failed.updated_at).total_seconds()
    assert 0.55 <= delay <= 0.65
    assert await claim(inbox, "w") == []
    await asyncio.sleep(0.3)
    assert await claim(inbox, "w") == []
    await asyncio.sleep(0.45)
    [again] = await claim(inbox, "w")
    assert names([again]) == ["later"]
    assert again.attempts == 2


async def test_a_failing_event_dies_after_max_attempts(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events([event(tag, "bad", conversation="c")])
    for attempt in range(1, 4):
        [item] = await claim(inbox, "w", max_attempts=3)
        assert item.attempts == attempt
        settled = await inbox.fail_inbox_event(
            item.id, owner="w", error=f"boom {attempt}", retry_delay_seconds=0, max_attempts=3
        )
        assert settled is not None
        assert settled.state is (InboxState.DEAD if attempt == 3 else InboxState.PENDING)
    assert await claim(inbox, "w") == []
    [dead] = await inbox.list_inbox_events(InboxState.DEAD)
    assert dead.last_error == "boom 3"
    assert await queue_rows(stores.database) == 0

    assert await inbox.requeue_inbox_event(dead.id) is not None
    assert await queue_rows(stores.database) == 1
    [replayed] = await claim(inbox, "w")
    assert replayed.id == dead.id
    assert replayed.attempts == 1


async def test_long_errors_are_cut(stores: Stores, tag: str) -> None:
    await stores.inbox.record_inbox_events([event(tag, "a")])
    [item] = await claim(stores.inbox, "w")
    failed = await stores.inbox.fail_inbox_event(
        item.id, owner="w", error="x" * 10_000, retry_delay_seconds=0, max_attempts=3
    )
    assert failed is not None
    assert failed.last_error is not None
    assert len(failed.last_error) == 4000


# --- queue bookkeeping -------------------------------------------------------------------


async def unfinished(inbox: InboxStore) -> list[InboxEvent]:
    pending = await inbox.list_inbox_events(InboxState.PENDING, limit=500)
    return pending + await inbox.list_inbox_events(InboxState.PROCESSING, limit=500)


async def test_no_queue_row_is_left_once_every_event_is_settled(stores: Stores, tag: str) -> None:
    inbox = stores.inbox
    await inbox.record_inbox_events(
        [event(tag, f"{c}{n}", conversation=c) for c in "ABCD" for n in range(3)]
        + [event(tag, "keyless-1"), event(tag, "keyless-2")]
    )
    assert await queue_rows(stores.database) == 6

    finished: list[uuid.UUID] = []
    for _ in range(40):
        claimed = await claim(inbox, "w", lease=0.2, complete=finished)
        finished = []
        for item in claimed:
            name = str(item.payload["name"])
            if name.startswith("B") and item.attempts == 1:
                # Retried once, then done.
                await inbox.fail_inbox_event(
                    item.id, owner="w", error="retry", retry_delay_seconds=0, max_attempts=3
                )
            elif name == "C1":
                await inbox.fail_inbox_event(
                    item.id,
                    owner="w",
                    error="dead",
                    retry_delay_seconds=0,
                    max_attempts=3,
                    permanent=True,
                )
            elif name == "D2":
                pass  # a crashed worker: the lease runs out, the last time on its last attempt
            elif name == "keyless-1":
                await inbox.complete_inbox_event(item.id, owner="w")
            else:
                finished.append(item.id)
        if not claimed and not finished:
            if not await unfinished(inbox):
                break
            await asyncio.sleep(0.25)
    assert await unfinished(inbox) == []
    dead = {str(e.payload["name"]) for e in await inbox.list_inbox_events(InboxState.DEAD)}
    assert dead == {"C1", "D2"}
    assert len(await inbox.list_inbox_events(InboxState.DONE, limit=100)) == 12
    assert await queue_rows(stores.database) == 0


async def test_a_queue_row_waits_while_a_retry_is_pending(stores: Stores, tag: str) -> None:
    await stores.inbox.record_inbox_events([event(tag, "a", conversation="c")])
    [item] = await claim(stores.inbox, "w")
    await stores.inbox.fail_inbox_event(
        item.id, owner="w", error="x", retry_delay_seconds=60, max_attempts=3
    )
    row = await stores.database.fetchrow(
        "select due_at from public.whatsapp_inbox_queues where queue_key = $1", f"{tag}-c"
    )
    stored = await stores.inbox.get_inbox_event(item.id)
    assert row is not None
    assert stored is not None
    assert row["due_at"] == stored.next_attempt_at


# --- notifications -----------------------------------------------------------------------


async def test_notifications_wake_a_listener_when_another_pool_records(
    stores: Stores, open_stores: StoresFactory, tag: str
) -> None:
    from app.repositories.inbox import InboxNotifications

    woken = asyncio.Event()
    notifications = InboxNotifications(stores.database, woken.set)
    notifications.start()
    try:
        # A call on (re)connection: whatever arrived before listening is looked at too.
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        await asyncio.sleep(0.2)
        assert not woken.is_set()  # nothing recorded, nothing said

        other = await open_stores()
        [recorded] = await other.inbox.record_inbox_events([event(tag, "a")])
        await asyncio.wait_for(woken.wait(), 1.0)

        # A replayed dead event wakes listeners too.
        [item] = await claim(other.inbox, "w")
        await other.inbox.fail_inbox_event(
            item.id, owner="w", error="x", retry_delay_seconds=0, max_attempts=3, permanent=True
        )
        woken.clear()
        assert await other.inbox.requeue_inbox_event(recorded.event_id) is not None
        await asyncio.wait_for(woken.wait(), 1.0)
    finally:
        await notifications.stop()


async def test_notifications_are_off_behind_a_transaction_pooler(database_url: str) -> None:
    from app.db.pool import PoolOptions
    from app.repositories.inbox import InboxNotifications

    database = await Database.connect(database_url, PoolOptions(transaction_pooler=True))
    try:
        notifications = InboxNotifications(database, lambda: None)
        assert notifications.supported is False
        notifications.start()
        await notifications.stop()
    finally:
        await database.aclose()


@pytest.mark.parametrize("limit", [1, 3])
async def test_keyless_events_are_independent(stores: Stores, tag: str, limit: int) -> None:
    await stores.inbox.record_inbox_events([event(tag, str(i)) for i in range(3)])
    first = await claim(stores.inbox, "w", limit=limit)
    assert len(first) == limit
    # An event without a key holds nothing back.
    rest = await claim(stores.inbox, "w")
    assert sorted(names(first + rest)) == ["0", "1", "2"]
