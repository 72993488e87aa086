"""The inbox worker: claims recorded webhook events and processes them, safely in parallel.

Any number of workers (in API processes or `uv run whatsapp-worker`) share the work through
the database: a claim leases events to one worker; a worker that dies gives them back when the
lease runs out. The store hands out only the oldest unfinished event of a conversation, so one
conversation is processed in arrival order, one event at a time, while others run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from app.repositories.errors import StoreError
from app.repositories.inbox import InboxStore
from app.repositories.models import InboxEvent
from app.services.whatsapp.processing_errors import PermanentEventError, RetryableEventError

logger = logging.getLogger(__name__)

# Processes one event; raising says it failed (see processing_errors), returning that it is done.
ProcessEvent = Callable[[InboxEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WorkerPolicy:
    concurrency: int = 8
    batch_size: int = 16
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    max_attempts: int = 6
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff with jitter for an event that failed its `attempts`-th try."""
        ceiling = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto


def worker_id() -> str:
    """A name unique to this worker, readable in the inbox's lease_owner column."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InboxWorker:
    """Claims due events and runs `process` on each, with bounded concurrency."""

    def __init__(
        self,
        inbox: InboxStore,
        process: ProcessEvent,
        policy: WorkerPolicy,
        *,
        owner: str | None = None,
    ) -> None:
        self._inbox = inbox
        # Events processed and not yet marked done: the next claim marks them, in its own
        # transaction (a round trip saved per event, and the conversation's next event is
        # claimable in that same transaction).
        self._finished: list[UUID] = []
        self._process = process
        self._policy = policy
        self.owner = owner or worker_id()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(policy.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Set while no run loop is going (a claim in progress could still start tasks).
        self._loop_idle = asyncio.Event()
        self._loop_idle.set()

    def wake(self) -> None:
        """New events were recorded: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and process until `stop()`."""
        logger.info("Inbox worker %s started", self.owner)
        self._loop_idle.clear()
        try:
            while not self._stopping:
                try:
                    claimed = await self.claim_and_start()
                except StoreError as exc:
                    logger.warning("Inbox claim failed (%s); retrying", type(exc).__name__)
                    claimed = 0
                if claimed == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._policy.poll_seconds)
                    self._wake.clear()
        finally:
            self._loop_idle.set()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming; let events in flight finish (their leases cover a hard stop)."""
        self._stopping = True
        self._wake.set()
        # A claim under way when asked to stop still starts its events: wait for the loop to
        # exit first, so none of them outlives the clients closed after `stop()`.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop_idle.wait(), grace_seconds)
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.flush_finished()

    async def flush_finished(self) -> None:
        """Mark the events processed so far done now (no claim to carry them)."""
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            await self._inbox.claim_inbox_events(
                owner=self.owner,
                limit=0,
                lease_seconds=self._policy.lease_seconds,
                max_attempts=self._policy.max_attempts,
                complete=finished,
            )
        except StoreError as exc:
            # Their leases run out and they run again: every effect is idempotent.
            logger.error("Could not mark %d processed events done: %s", len(finished), exc)

    async def claim_and_start(self) -> int:
        """Claim as many due events as there are free slots; start each. Returns the count."""
        free = self._policy.concurrency - len(self._in_flight)
        if free <= 0:
            # Every slot busy: wait for one to free up before claiming more.
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        finished, self._finished = self._finished, []
        try:
            events = await self._inbox.claim_inbox_events(
                owner=self.owner,
                limit=min(free, self._policy.batch_size),
                lease_seconds=self._policy.lease_seconds,
                max_attempts=self._policy.max_attempts,
                complete=finished,
            )
        except BaseException:
            # Not marked: try again with the next claim (or their leases run out and the
            # events run again, which is safe).
            self._finished.extend(finished)
            raise
        for event in events:
            task = asyncio.create_task(self._handle(event), name=f"inbox-{event.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(events)

    async def drain(self) -> int:
        """Process every due event now and wait for them (tests and one-shot runs)."""
        total = 0
        while True:
            claimed = await self.claim_and_start()
            if self._in_flight:
                await asyncio.gather(*list(self._in_flight), return_exceptions=True)
            if claimed == 0:
                return total
            total += claimed

    async def _handle(self, event: InboxEvent) -> None:
        async with self._slots:
            heartbeat = asyncio.create_task(self._keep_lease(event))
            try:
                await self._process(event)
            except asyncio.CancelledError:
                raise
            except PermanentEventError as exc:
                await self._fail(event, exc, permanent=True)
            except RetryableEventError as exc:
                await self._fail(event, exc, retry_after=exc.retry_after)
            except Exception as exc:
                logger.exception("Event %s (%s) failed", event.id, event.event)
                await self._fail(event, exc)
            else:
                self._finished.append(event.id)
            finally:
                heartbeat.cancel()
                # The conversation's next event (held back while this one ran) is due now:
                # claim it at once instead of at the next poll.
                self._wake.set()

    async def _fail(
        self,
        event: InboxEvent,
        exc: BaseException,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        delay = max(retry_after or 0.0, self._policy.retry_delay(event.attempts))
        error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "Event %s attempt %d failed: %s", event.id, event.attempts, type(exc).__name__
        )
        await self._settle(
            self._inbox.fail_inbox_event(
                event.id,
                owner=self.owner,
                error=error,
                retry_delay_seconds=delay,
                max_attempts=self._policy.max_attempts,
                permanent=permanent,
            ),
            event,
        )

    async def _settle(self, update: Awaitable[InboxEvent | None], event: InboxEvent) -> None:
        try:
            result = await update
        except StoreError as exc:
            # The lease will run out and the event be processed again: effects are idempotent.
            logger.error("Could not record the outcome of event %s: %s", event.id, exc)
            return
        if result is None:
            logger.warning("Event %s: lease lost to another worker before settling", event.id)

    async def _keep_lease(self, event: InboxEvent) -> None:
        interval = self._policy.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                kept = await self._inbox.extend_inbox_lease(
                    event.id, owner=self.owner, lease_seconds=self._policy.lease_seconds
                )
            except StoreError:
                continue
            if kept is None:
                return
