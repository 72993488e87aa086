"""Group commit: callers that arrive while a write is under way share the next write.

Webhook deliveries arrive many at a time, and each write costs a fixed price (a round trip to
PostgreSQL, a statement and a commit, with its WAL flush) that dwarfs the rows it carries.
Queuing the callers that arrive during a write and writing them together next turns N writes
into one, while every caller still waits for its own rows to be committed and gets its own
results, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.repositories.errors import StoreError, StoreUnavailableError

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Writes one batch: each caller's items in, each caller's results out, in the same order.
BatchWriter = Callable[[Sequence[Sequence[ItemT]]], Awaitable[list[list[ResultT]]]]


@dataclass(slots=True)
class _Waiting(Generic[ItemT, ResultT]):
    items: Sequence[ItemT]
    done: asyncio.Future[list[ResultT]]


class GroupCommit(Generic[ItemT, ResultT]):
    """Up to `writers` writes at a time; whoever waits meanwhile goes into the next one."""

    def __init__(
        self, write: BatchWriter[ItemT, ResultT], *, max_items: int = 500, writers: int = 1
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._queue: list[_Waiting[ItemT, ResultT]] = []
        self._writer = asyncio.Semaphore(writers)

    async def submit(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Write `items` (in some batch) and return their results once committed."""
        waiting = _Waiting[ItemT, ResultT](items, asyncio.get_running_loop().create_future())
        # A caller gone (cancelled) before its batch failed never reads the failure.
        waiting.done.add_done_callback(_retrieve)
        self._queue.append(waiting)
        try:
            while not waiting.done.done():
                async with self._writer:
                    if waiting.done.done():
                        break
                    batch = self._take_batch()
                    if batch:
                        # Settles every caller in the batch (ours, when it is in it).
                        await self._write_batch(batch)
                        continue
                # Ours is in a batch another writer has in flight: wait for that one.
                await asyncio.shield(waiting.done)
        except BaseException:
            if waiting in self._queue:
                # Cancelled before any writer took it: it is never written.
                self._queue.remove(waiting)
            raise
        return waiting.done.result()

    async def _write_batch(self, batch: list[_Waiting[ItemT, ResultT]]) -> None:
        """Write one batch and settle its callers: each gets its results or the failure."""
        try:
            results = await self._write([entry.items for entry in batch])
        except BaseException as exc:
            for entry in batch:
                if not entry.done.done():
                    entry.done.set_exception(_batch_failure(exc))
            if not isinstance(exc, Exception):
                raise  # the writing caller itself was cancelled
            return
        for entry, result in zip(batch, results, strict=True):
            if not entry.done.done():
                entry.done.set_result(result)

    def _take_batch(self) -> list[_Waiting[ItemT, ResultT]]:
        """The oldest waiting callers, up to `max_items` items (always at least one caller)."""
        count = 0
        size = 0
        for entry in self._queue:
            if count and size + len(entry.items) > self._max_items:
                break
            count += 1
            size += len(entry.items)
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _batch_failure(exc: BaseException) -> BaseException:
    """What the other callers of a failed batch get: the same store error (a new instance
    each, so tracebacks do not mix), or unavailable when the writer was cancelled."""
    if isinstance(exc, StoreError):
        return type(exc)(*exc.args)
    return StoreUnavailableError(f"the batched write was interrupted ({type(exc).__name__})")
