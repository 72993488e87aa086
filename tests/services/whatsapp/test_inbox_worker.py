"""The inbox worker on a real (embedded) store: outcomes, retries, dead events, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from app.repositories.models import InboxEvent, InboxState, NewInboxEvent
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
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


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[SqliteWhatsAppRepository]:
    repo = SqliteWhatsAppRepository(tmp_path / "inbox.sqlite3")
    yield repo
    await repo.aclose()


async def record(
    repository: SqliteWhatsAppRepository, count: int = 1, conversation: str | None = None
) -> list[str]:
    keys = [uuid4().hex for _ in range(count)]
    await repository.record_inbox_events(
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


async def states(repository: SqliteWhatsAppRepository) -> dict[InboxState, int]:
    return {
        state: len(await repository.list_inbox_events(state, limit=500)) for state in InboxState
    }


async def run_until_idle(worker: InboxWorker, rounds: int = 50) -> None:
    for _ in range(rounds):
        await worker.drain()
        await asyncio.sleep(0.03)  # let retry delays come due


async def test_success_completes(repository: SqliteWhatsAppRepository) -> None:
    await record(repository, 3)
    seen: list[int] = []

    async def process(event: InboxEvent) -> None:
        seen.append(int(str(event.payload["n"])))

    assert await InboxWorker(repository, process, FAST).drain() == 3
    assert sorted(seen) == [0, 1, 2]
    assert (await states(repository))[InboxState.DONE] == 3


async def test_retryable_failure_retries_then_succeeds(
    repository: SqliteWhatsAppRepository,
) -> None:
    await record(repository)
    calls = 0

    async def process(event: InboxEvent) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryableEventError("Kapso down", retry_after=0.01)

    await run_until_idle(InboxWorker(repository, process, FAST))
    [done] = await repository.list_inbox_events(InboxState.DONE)
    assert done.attempts == 3
    assert calls == 3


async def test_unexpected_errors_end_dead_after_max_attempts(
    repository: SqliteWhatsAppRepository,
) -> None:
    await record(repository)

    async def process(event: InboxEvent) -> None:
        raise ValueError("bug")

    await run_until_idle(InboxWorker(repository, process, FAST))
    [dead] = await repository.list_inbox_events(InboxState.DEAD)
    assert dead.attempts == FAST.max_attempts
    assert dead.last_error == "ValueError: bug"


async def test_permanent_failure_is_dead_at_once(repository: SqliteWhatsAppRepository) -> None:
    await record(repository)

    async def process(event: InboxEvent) -> None:
        raise PermanentEventError("unreadable payload")

    await InboxWorker(repository, process, FAST).drain()
    [dead] = await repository.list_inbox_events(InboxState.DEAD)
    assert dead.attempts == 1


async def test_concurrency_is_bounded(repository: SqliteWhatsAppRepository) -> None:
    await record(repository, 12)
    running = peak = 0

    async def process(event: InboxEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await InboxWorker(repository, process, FAST).drain()
    assert peak == FAST.concurrency
    assert (await states(repository))[InboxState.DONE] == 12


async def test_one_conversation_is_processed_in_order_one_at_a_time(
    repository: SqliteWhatsAppRepository,
) -> None:
    await record(repository, 5, conversation="conv-a")
    order: list[int] = []
    running = 0

    async def process(event: InboxEvent) -> None:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0.01)
        order.append(int(str(event.payload["n"])))
        running -= 1

    await run_until_idle(InboxWorker(repository, process, FAST), rounds=10)
    assert order == [0, 1, 2, 3, 4]


async def test_the_lease_is_kept_alive_during_long_work(
    repository: SqliteWhatsAppRepository,
) -> None:
    await record(repository)
    policy = WorkerPolicy(lease_seconds=0.3, poll_seconds=0.01, max_attempts=3)
    other = InboxWorker(repository, lambda _: asyncio.sleep(0), policy, owner="other")

    async def process(event: InboxEvent) -> None:
        await asyncio.sleep(1.0)  # > 3 leases: only the heartbeat keeps it ours
        assert await other.claim_and_start() == 0

    await InboxWorker(repository, process, policy, owner="me").drain()
    [done] = await repository.list_inbox_events(InboxState.DONE)
    assert done.attempts == 1


def test_retry_delay_grows_with_jitter_and_is_capped() -> None:
    policy = WorkerPolicy(retry_base_seconds=2, retry_max_seconds=60)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)]:
        delays = {policy.retry_delay(attempts) for _ in range(30)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


async def test_stop_waits_for_events_claimed_while_stopping(
    repository: SqliteWhatsAppRepository,
) -> None:
    """A claim under way when stop() is called still starts its events; stop() must not
    return while they run (the clients they use are closed right after)."""
    await record(repository, 2)
    finished: list[str] = []
    claim_started = asyncio.Event()

    class SlowClaims(SqliteWhatsAppRepository):
        async def claim_inbox_events(self, **kwargs: object) -> list[InboxEvent]:
            claim_started.set()
            await asyncio.sleep(0.2)
            return await repository.claim_inbox_events(**kwargs)  # type: ignore[arg-type]

    async def process(event: InboxEvent) -> None:
        await asyncio.sleep(0.2)
        finished.append(str(event.id))

    slow = SlowClaims(repository.path)
    worker = InboxWorker(slow, process, FAST)
    runner = asyncio.create_task(worker.run())
    await claim_started.wait()
    await worker.stop(grace_seconds=5)
    await runner
    assert len(finished) == 2
    await slow.aclose()


async def test_an_event_completed_by_its_processing_is_not_completed_again(
    repository: SqliteWhatsAppRepository, caplog: pytest.LogCaptureFixture
) -> None:
    """Processing may complete the event with its last effect (one transaction, one round
    trip less) and say so; the worker then leaves it alone."""
    await record(repository, 2)
    completions: list[str] = []

    class CountingCompletions(SqliteWhatsAppRepository):
        async def complete_inbox_event(self, event_id: UUID, *, owner: str) -> InboxEvent | None:
            completions.append(str(event_id))
            return await super().complete_inbox_event(event_id, owner=owner)

    counting = CountingCompletions(repository.path)

    async def process(event: InboxEvent) -> bool:
        if event.payload["n"] == 0:
            assert event.lease_owner is not None
            done = await repository.complete_inbox_event(event.id, owner=event.lease_owner)
            return done is not None
        return False

    with caplog.at_level("WARNING"):
        assert await InboxWorker(counting, process, FAST).drain() == 2
    assert (await states(repository))[InboxState.DONE] == 2
    # Only the event its processing did not complete was completed by the worker.
    assert len(completions) == 1
    assert "lease lost" not in caplog.text
    await counting.aclose()
