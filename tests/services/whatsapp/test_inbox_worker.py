"""The inbox worker on a real store (PostgreSQL): outcomes, retries, dead events, concurrency,
and completions carried by the next claim."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest

from app.db.pool import Connection, Database
from app.repositories.errors import StoreUnavailableError
from app.repositories.inbox import InboxStore
from app.repositories.models import InboxEvent, InboxState, NewInboxEvent
from app.repositories.stores import Stores
from app.services.whatsapp.inbox_worker import InboxWorker, WorkerPolicy
from app.services.whatsapp.processing_errors import PermanentEventError, RetryableEventError

pytestmark = pytest.mark.timeout(30)

FAST = WorkerPolicy(
    concurrency=4,
    batch_size=8,
    lease_seconds=5,
    poll_seconds=0.01,
    max_attempts=3,
    retry_base_seconds=0.01,
    retry_max_seconds=0.02,
)


class RecordingInbox(InboxStore):
    """The real inbox, remembering what each claim was asked to complete, and counting the
    completions made one by one."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.completed_by_claims: list[list[UUID]] = []
        self.single_completions = 0

    async def claim_inbox_events(
        self,
        *,
        owner: str,
        limit: int,
        lease_seconds: float,
        max_attempts: int,
        complete: Sequence[UUID] = (),
    ) -> list[InboxEvent]:
        if complete:
            self.completed_by_claims.append(list(complete))
        return await super().claim_inbox_events(
            owner=owner,
            limit=limit,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            complete=complete,
        )

    async def complete_inbox_event(
        self, event_id: UUID, *, owner: str, tx: Connection | None = None
    ) -> InboxEvent | None:
        self.single_completions += 1
        return await super().complete_inbox_event(event_id, owner=owner, tx=tx)


@pytest.fixture
def inbox(stores: Stores) -> InboxStore:
    return stores.inbox


async def record(inbox: InboxStore, count: int = 1, conversation: str | None = None) -> list[str]:
    keys = [uuid4().hex for _ in range(count)]
    await inbox.record_inbox_events(
        [
            NewInboxEvent(
                idempotency_key=key,
                event="whatsapp.message.received",
                conversation_key=conversation or key,
                payload={"n": index},
            )
            for index, key in enumerate(keys)
        ]
    )
    return keys


async def states(inbox: InboxStore) -> dict[InboxState, int]:
    return {state: len(await inbox.list_inbox_events(state, limit=500)) for state in InboxState}


async def run_until_idle(worker: InboxWorker, rounds: int = 50) -> None:
    for _ in range(rounds):
        await worker.drain()
        await asyncio.sleep(0.03)  # let retry delays come due


async def test_success_completes(inbox: InboxStore) -> None:
    await record(inbox, 3)
    seen: list[int] = []

    async def process(event: InboxEvent) -> None:
        seen.append(int(str(event.payload["n"])))

    assert await InboxWorker(inbox, process, FAST).drain() == 3
    assert sorted(seen) == [0, 1, 2]
    assert (await states(inbox))[InboxState.DONE] == 3


async def test_retryable_failure_retries_then_succeeds(inbox: InboxStore) -> None:
    await record(inbox)
    calls = 0

    async def process(event: InboxEvent) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryableEventError("Kapso down", retry_after=0.01)

    await run_until_idle(InboxWorker(inbox, process, FAST))
    [done] = await inbox.list_inbox_events(InboxState.DONE)
    assert done.attempts == 3
    assert calls == 3


async def test_a_retry_waits_for_the_delay_the_failure_asked_for(inbox: InboxStore) -> None:
    await record(inbox)
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def process(event: InboxEvent) -> None:
        calls.append(loop.time())
        if len(calls) == 1:
            raise RetryableEventError("rate limited", retry_after=0.5)

    worker = InboxWorker(inbox, process, FAST)
    await worker.drain()
    [pending] = await inbox.list_inbox_events(InboxState.PENDING)
    assert pending.last_error == "RetryableEventError: rate limited"
    await run_until_idle(worker, rounds=30)
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.45
    assert (await states(inbox))[InboxState.DONE] == 1


async def test_unexpected_errors_end_dead_after_max_attempts(inbox: InboxStore) -> None:
    await record(inbox)

    async def process(event: InboxEvent) -> None:
        raise ValueError("bug")

    await run_until_idle(InboxWorker(inbox, process, FAST))
    [dead] = await inbox.list_inbox_events(InboxState.DEAD)
    assert dead.attempts == FAST.max_attempts
    assert dead.last_error == "ValueError: bug"


async def test_permanent_failure_is_dead_at_once(inbox: InboxStore) -> None:
    await record(inbox)

    async def process(event: InboxEvent) -> None:
        raise PermanentEventError("unreadable payload")

    await InboxWorker(inbox, process, FAST).drain()
    [dead] = await inbox.list_inbox_events(InboxState.DEAD)
    assert dead.attempts == 1
    assert dead.last_error == "PermanentEventError: unreadable payload"


async def test_concurrency_is_bounded(inbox: InboxStore) -> None:
    await record(inbox, 12)
    running = peak = 0

    async def process(event: InboxEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await InboxWorker(inbox, process, FAST).drain()
    assert peak == FAST.concurrency
    assert (await states(inbox))[InboxState.DONE] == 12


async def test_one_conversation_is_processed_in_order_one_at_a_time(inbox: InboxStore) -> None:
    await record(inbox, 5, conversation="conv-a")
    order: list[int] = []
    running = 0

    async def process(event: InboxEvent) -> None:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0.01)
        order.append(int(str(event.payload["n"])))
        running -= 1

    await run_until_idle(InboxWorker(inbox, process, FAST), rounds=10)
    assert order == [0, 1, 2, 3, 4]
    assert (await states(inbox))[InboxState.DONE] == 5


async def test_two_workers_share_a_conversation_in_order(
    stores: Stores, database: Database
) -> None:
    """Two workers (as two processes would) on one conversation: still one event at a time, in
    arrival order; each event's completion rides on its worker's next claim."""
    await record(stores.inbox, 6, conversation="conv-b")
    order: list[int] = []
    running = 0

    async def process(event: InboxEvent) -> None:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0.01)
        order.append(int(str(event.payload["n"])))
        running -= 1

    workers = [
        InboxWorker(InboxStore(database), process, FAST, owner=name) for name in ("w1", "w2")
    ]
    runners = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        for _ in range(200):
            if (await states(stores.inbox))[InboxState.DONE] == 6:
                break
            await asyncio.sleep(0.02)
    finally:
        for worker in workers:
            await worker.stop(grace_seconds=5)
        await asyncio.gather(*runners)
    assert order == [0, 1, 2, 3, 4, 5]
    assert (await states(stores.inbox))[InboxState.DONE] == 6


async def test_the_lease_is_kept_alive_during_long_work(inbox: InboxStore) -> None:
    await record(inbox)
    policy = WorkerPolicy(lease_seconds=0.3, poll_seconds=0.01, max_attempts=3)

    async def nothing(event: InboxEvent) -> None:
        return None

    other = InboxWorker(inbox, nothing, policy, owner="other")

    async def process(event: InboxEvent) -> None:
        await asyncio.sleep(1.0)  # > 3 leases: only the heartbeat keeps it ours
        assert await other.claim_and_start() == 0

    await InboxWorker(inbox, process, policy, owner="me").drain()
    [done] = await inbox.list_inbox_events(InboxState.DONE)
    assert done.attempts == 1
    assert done.lease_owner is None


def test_retry_delay_grows_with_jitter_and_is_capped() -> None:
    policy = WorkerPolicy(retry_base_seconds=2, retry_max_seconds=60)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)]:
        delays = {policy.retry_delay(attempts) for _ in range(30)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


async def test_stop_waits_for_events_claimed_while_stopping(database: Database) -> None:
    """A claim under way when stop() is called still starts its events; stop() must not
    return while they run (the clients they use are closed right after)."""
    inbox = InboxStore(database)
    await record(inbox, 2)
    finished: list[str] = []
    claim_started = asyncio.Event()

    class SlowClaims(InboxStore):
        async def claim_inbox_events(
            self,
            *,
            owner: str,
            limit: int,
            lease_seconds: float,
            max_attempts: int,
            complete: Sequence[UUID] = (),
        ) -> list[InboxEvent]:
            claim_started.set()
            await asyncio.sleep(0.2)
            return await super().claim_inbox_events(
                owner=owner,
                limit=limit,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                complete=complete,
            )

    async def process(event: InboxEvent) -> None:
        await asyncio.sleep(0.2)
        finished.append(str(event.id))

    worker = InboxWorker(SlowClaims(database), process, FAST)
    runner = asyncio.create_task(worker.run())
    await claim_started.wait()
    await worker.stop(grace_seconds=5)
    await runner
    assert len(finished) == 2
    # stop() marked them done: nothing is processed again after a restart.
    assert (await states(inbox))[InboxState.DONE] == 2


async def test_drain_leaves_every_processed_event_done_through_claims(database: Database) -> None:
    """Completions are batched: a processed event is marked done by the worker's next claim,
    never by a completion of its own; drain() ends with one that carries the last ones."""
    inbox = RecordingInbox(database)
    await record(inbox, 10)
    await record(inbox, 3, conversation="conv-c")

    async def process(event: InboxEvent) -> None:
        await asyncio.sleep(0.01)

    assert await InboxWorker(inbox, process, FAST).drain() == 13
    assert await states(inbox) == {
        InboxState.PENDING: 0,
        InboxState.PROCESSING: 0,
        InboxState.DONE: 13,
        InboxState.DEAD: 0,
    }
    assert inbox.single_completions == 0
    completed = [event_id for batch in inbox.completed_by_claims for event_id in batch]
    assert len(completed) == len(set(completed)) == 13
    # Fewer claims than events: completions travel together.
    assert len(inbox.completed_by_claims) < 13


async def test_run_then_stop_leaves_every_processed_event_done(database: Database) -> None:
    inbox = RecordingInbox(database)
    await record(inbox, 6)
    await record(inbox, 4, conversation="conv-d")
    processed: list[UUID] = []

    async def process(event: InboxEvent) -> None:
        processed.append(event.id)

    worker = InboxWorker(inbox, process, FAST)
    runner = asyncio.create_task(worker.run())
    for _ in range(200):
        if len(processed) == 10:
            break
        await asyncio.sleep(0.01)
    await worker.stop(grace_seconds=5)
    await runner
    assert len(processed) == 10
    # Every one done, the last ones by stop() (flush_finished), none left processing.
    done = await inbox.list_inbox_events(InboxState.DONE, limit=100)
    assert {e.id for e in done} == set(processed)
    assert (await states(inbox))[InboxState.PROCESSING] == 0
    assert inbox.single_completions == 0


async def test_a_finished_event_is_done_by_the_next_claim_not_before(database: Database) -> None:
    inbox = InboxStore(database)
    await record(inbox, 2, conversation="conv-e")
    seen: list[UUID] = []

    async def process(event: InboxEvent) -> None:
        seen.append(event.id)

    worker = InboxWorker(inbox, process, FAST)
    assert await worker.claim_and_start() == 1
    await asyncio.sleep(0.05)  # the first event is processed...
    first = await inbox.get_inbox_event(seen[0])
    assert first is not None
    assert first.state is InboxState.PROCESSING  # ...and waits for the next claim
    # That claim marks it done and hands out the conversation's next event at once.
    assert await worker.claim_and_start() == 1
    first = await inbox.get_inbox_event(seen[0])
    assert first is not None
    assert first.state is InboxState.DONE
    await asyncio.sleep(0.05)
    await worker.flush_finished()
    second = await inbox.get_inbox_event(seen[1])
    assert second is not None
    assert second.state is InboxState.DONE


async def test_failed_completions_are_carried_to_the_next_claim(database: Database) -> None:
    """A claim that fails keeps its completions for the next one (nothing is forgotten)."""

    class FlakyClaims(InboxStore):
        fail_next = False

        async def claim_inbox_events(
            self,
            *,
            owner: str,
            limit: int,
            lease_seconds: float,
            max_attempts: int,
            complete: Sequence[UUID] = (),
        ) -> list[InboxEvent]:
            if self.fail_next:
                self.fail_next = False
                raise StoreUnavailableError("database down")
            return await super().claim_inbox_events(
                owner=owner,
                limit=limit,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                complete=complete,
            )

    inbox = FlakyClaims(database)
    await record(inbox, 2)

    async def process(event: InboxEvent) -> None:
        return None

    worker = InboxWorker(inbox, process, FAST)
    assert await worker.claim_and_start() == 2
    await asyncio.sleep(0.05)
    inbox.fail_next = True
    with pytest.raises(StoreUnavailableError):
        await worker.claim_and_start()
    assert (await states(inbox))[InboxState.PROCESSING] == 2
    assert await worker.claim_and_start() == 0
    assert (await states(inbox))[InboxState.DONE] == 2
