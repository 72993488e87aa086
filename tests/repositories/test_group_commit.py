"""Group commit: concurrent callers share writes, each gets its own results or the failure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.repositories.errors import StoreUnavailableError
from app.repositories.group_commit import GroupCommit
from app.repositories.models import NewInboxEvent
from app.repositories.stores import Stores


class Recorder:
    """A batch writer that doubles numbers, remembers its batches and can be made to fail."""

    def __init__(self, *, delay: float = 0.01) -> None:
        self.batches: list[list[list[int]]] = []
        self.delay = delay
        self.fail_with: BaseException | None = None

    async def write(self, batch: Sequence[Sequence[int]]) -> list[list[int]]:
        self.batches.append([list(items) for items in batch])
        failure = self.fail_with  # decided when the write starts
        await asyncio.sleep(self.delay)
        if failure is not None:
            raise failure
        return [[item * 2 for item in items] for items in batch]


async def test_concurrent_callers_share_writes_and_get_their_own_results() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    inputs = [[n, n + 100] for n in range(50)]
    results = await asyncio.gather(*(group.submit(items) for items in inputs))
    assert results == [[n * 2, (n + 100) * 2] for n in range(50)]
    # The first caller writes alone; the others, arrived meanwhile, go together after it.
    assert len(recorder.batches) == 2
    assert recorder.batches[0] == [[0, 100]]
    assert sorted(item for items in recorder.batches[1] for item in items) == sorted(
        item for items in inputs[1:] for item in items
    )


async def test_batches_are_capped() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write, max_items=10)
    results = await asyncio.gather(*(group.submit([n, n, n]) for n in range(20)))
    assert results == [[n * 2] * 3 for n in range(20)]
    # 1 alone, then 19 callers of 3 items in batches of at most 3 callers (9 items).
    assert all(sum(len(items) for items in batch) <= 10 for batch in recorder.batches)
    assert len(recorder.batches) == 1 + 7


async def test_a_failed_write_fails_every_caller_in_it_and_nothing_else() -> None:
    recorder = Recorder(delay=0.05)
    group = GroupCommit(recorder.write)
    first = asyncio.create_task(group.submit([1]))
    await asyncio.sleep(0.01)  # the first write is under way
    recorder.fail_with = StoreUnavailableError("store down")
    second = asyncio.create_task(group.submit([2]))
    third = asyncio.create_task(group.submit([3]))
    assert await first == [2]  # its write had started before the failure was set
    for task in (second, third):
        with pytest.raises(StoreUnavailableError, match="store down"):
            await task
    # Healthy again: the next caller is written normally.
    recorder.fail_with = None
    assert await group.submit([4]) == [8]


async def test_capped_batches_fail_one_by_one_and_nothing_is_written_twice() -> None:
    recorder = Recorder(delay=0.02)
    group = GroupCommit(recorder.write, max_items=1)
    blocker = asyncio.create_task(group.submit([0]))
    await asyncio.sleep(0.005)
    recorder.fail_with = StoreUnavailableError("store down")
    waiting = [asyncio.create_task(group.submit([n])) for n in (1, 2)]
    outcomes = await asyncio.gather(blocker, *waiting, return_exceptions=True)
    assert outcomes[0] == [0]
    assert all(isinstance(outcome, StoreUnavailableError) for outcome in outcomes[1:])
    recorder.fail_with = None
    assert await group.submit([9]) == [18]
    # Arrival order, each caller in exactly one write.
    assert recorder.batches == [[[0]], [[1]], [[2]], [[9]]]


async def test_a_cancelled_writer_fails_the_others_as_unavailable() -> None:
    recorder = Recorder(delay=1.0)
    group = GroupCommit(recorder.write)
    writer = asyncio.create_task(group.submit([1]))
    await asyncio.sleep(0.01)
    other = asyncio.create_task(group.submit([2]))
    await asyncio.sleep(0.01)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    # The next writer takes the waiting caller in its own write.
    assert await asyncio.wait_for(other, 5) == [4]


async def test_several_writers_overlap_and_every_caller_gets_its_results() -> None:
    recorder = Recorder(delay=0.02)
    in_flight = 0
    most = 0

    async def write(batch: Sequence[Sequence[int]]) -> list[list[int]]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await recorder.write(batch)
        finally:
            in_flight -= 1

    group = GroupCommit(write, writers=2)
    results = await asyncio.gather(*(group.submit([n]) for n in range(100)))
    assert results == [[n * 2] for n in range(100)]
    assert most == 2
    written = sorted(item for batch in recorder.batches for items in batch for item in items)
    assert written == list(range(100))  # each exactly once


async def test_each_caller_gets_the_outcome_of_the_batch_that_carried_it() -> None:
    """With two writers, a caller whose items another writer took may meanwhile write (and
    fail) a later batch: it still answers with its own batch's outcome, not the other's."""
    log: list[tuple[str, list[str]]] = []
    durations = {"A": 0.05, "B": 0.2, "C": 0.3, "X": 0.01}

    async def write(batch: Sequence[Sequence[str]]) -> list[list[str]]:
        names = [items[0] for items in batch]
        await asyncio.sleep(durations[names[0]])
        if names[0] == "X":
            log.append(("fail", names))
            raise StoreUnavailableError("batch X failed")
        log.append(("ok", names))
        return [[f"ok-{item}" for item in items] for items in batch]

    group = GroupCommit(write, writers=2)

    async def call(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        try:
            return (await group.submit([name]))[0]
        except StoreUnavailableError as exc:
            return f"failed: {exc}"

    results = await asyncio.gather(
        call("A", 0), call("B", 0.001), call("C", 0.01), call("D", 0.011), call("X", 0.06)
    )
    assert ("ok", ["C", "D"]) in log  # D went out with C...
    assert ("fail", ["X"]) in log  # ...while D's own task wrote X's batch, which failed
    assert results == ["ok-A", "ok-B", "ok-C", "ok-D", "failed: batch X failed"]


async def test_a_caller_cancelled_while_waiting_is_never_written() -> None:
    recorder = Recorder(delay=0.05)
    group = GroupCommit(recorder.write)
    first = asyncio.create_task(group.submit([1]))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(group.submit([2]))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await first == [2]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await group.submit([3]) == [6]
    assert recorder.batches == [[[1]], [[3]]]


async def test_concurrent_inbox_records_share_transactions(stores: Stores) -> None:
    """On the real inbox: every event of one write shares its transaction's received_at, so
    fewer distinct times than callers means callers shared writes."""
    callers = 50
    results = await asyncio.gather(
        *(
            stores.inbox.record_inbox_events(
                [
                    NewInboxEvent(
                        idempotency_key=f"gc-{n}", event="whatsapp.message.received", payload={}
                    )
                ]
            )
            for n in range(callers)
        )
    )
    assert all(batch[0].is_new for batch in results)
    rows = await stores.database.fetch(
        "select count(distinct received_at) as writes, count(*) as events"
        " from public.whatsapp_inbox_events"
    )
    assert rows[0]["events"] == callers
    assert rows[0]["writes"] < callers / 5
