"""Webhook delivery as Kapso does it: signed raw body, idempotency key, retries, batches.

Every delivery is its own task, but at most `concurrency` of them have a request on the wire;
the others wait for a slot (first come, first served). A slot lends its request an HTTP client of
one connection. Not one shared pool: httpcore re-examines every queued request and every
connection (a socket poll each) whenever a request joins or leaves its pool, and with hundreds of
webhooks pending that took the emulator's whole core. A delivery waiting to retry holds no slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from kapso_emulator.config import DEFAULT_WEBHOOK_CONCURRENCY, EmulatorConfig, PayloadVersion
from kapso_emulator.models import Delivery, DeliveryAttempt
from kapso_emulator.state import EmulatorState, new_uuid

logger = logging.getLogger(__name__)

MESSAGE_RECEIVED = "whatsapp.message.received"


def sign(secret: str, body: bytes) -> str:
    """Kapso's `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the raw body bytes."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode_body(payload: Any) -> bytes:
    # Compact and UTF-8 (not \u escapes), as a JavaScript JSON.stringify would produce.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class _BatchBuffer:
    items: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class WebhookDispatcher:
    """Creates deliveries and runs them in background tasks that `drain` can wait for."""

    def __init__(
        self,
        state: EmulatorState,
        config: Callable[[], EmulatorConfig],
        *,
        concurrency: int = DEFAULT_WEBHOOK_CONCURRENCY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("webhook concurrency must be at least 1")
        self._state = state
        self._config = config
        self.concurrency = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._batches: dict[str, _BatchBuffer] = {}
        # Created on first use, in the running loop (the semaphore binds to it).
        self._slots: asyncio.Semaphore | None = None
        # Every client made (at most one per slot), and those no slot holds now.
        self._clients: list[httpx.AsyncClient] = []
        self._idle_clients: list[httpx.AsyncClient] = []
        self._ssl_context: ssl.SSLContext | None = None

    # -- task bookkeeping ----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` in the background and remember it until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("emulator background task failed", exc_info=task.exception())

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, wait_seconds: float) -> bool:
        """Wait until every delivery, retry, batch and status progression is done."""
        deadline = time.monotonic() + wait_seconds
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._batches.clear()

    async def close(self) -> None:
        await self.cancel_all()
        clients, self._clients, self._idle_clients = self._clients, [], []
        self._slots = None
        for client in clients:
            await client.aclose()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[httpx.AsyncClient]:
        """Wait for a free slot; lend its client (a slot holds one, so there are at most N)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            client = self._idle_clients.pop() if self._idle_clients else self._new_client()
            try:
                yield client
            finally:
                self._idle_clients.append(client)

    def _new_client(self) -> httpx.AsyncClient:
        if self._ssl_context is None:
            # Loading the CA bundle takes ~20 ms; one context serves every client.
            self._ssl_context = httpx.create_ssl_context()
        client = httpx.AsyncClient(
            verify=self._ssl_context,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self._clients.append(client)
        return client

    # -- emitting ------------------------------------------------------------------------------

    def emit(
        self,
        event: str,
        *,
        v2: Callable[[], dict[str, Any]],
        v1: Callable[[], dict[str, Any]],
        conversation_id: str | None = None,
    ) -> Delivery | None:
        """Send one event, or buffer it when batching applies; returns the delivery if created.

        `v2` and `v1` render the body in each payload version; only the configured one is called.
        """
        config = self._config()
        payload = v1() if config.payload_version is PayloadVersion.V1 else v2()
        if config.batching and event == MESSAGE_RECEIVED and conversation_id is not None:
            self._buffer(conversation_id, payload)
            return None
        return self._start(event, payload, batch_size=None)

    def _buffer(self, conversation_id: str, payload: dict[str, Any]) -> None:
        config = self._config()
        buffer = self._batches.setdefault(conversation_id, _BatchBuffer())
        buffer.items.append(payload)
        if len(buffer.items) >= config.batch_max_size:
            self._flush(conversation_id)
        elif buffer.timer is None:
            buffer.timer = self.spawn(self._flush_later(conversation_id))

    async def _flush_later(self, conversation_id: str) -> None:
        await asyncio.sleep(self._config().scaled(self._config().batch_window_seconds))
        buffer = self._batches.get(conversation_id)
        if buffer is not None:
            buffer.timer = None
        self._flush(conversation_id)

    def _flush(self, conversation_id: str) -> None:
        buffer = self._batches.pop(conversation_id, None)
        if buffer is None or not buffer.items:
            return
        if buffer.timer is not None and buffer.timer is not asyncio.current_task():
            buffer.timer.cancel()
        body = {"type": MESSAGE_RECEIVED, "batch": True, "data": buffer.items}
        self._start(MESSAGE_RECEIVED, body, batch_size=len(buffer.items))

    def _start(self, event: str, payload: dict[str, Any], *, batch_size: int | None) -> Delivery:
        config = self._config()
        body = encode_body(payload)
        key = new_uuid()
        headers = {
            **config.webhook_headers,
            "Content-Type": "application/json",
            "X-Webhook-Event": event,
            "X-Webhook-Signature": sign(config.webhook_secret, body),
            "X-Idempotency-Key": key,
            "X-Webhook-Payload-Version": config.payload_version.value,
        }
        if batch_size is not None:
            headers["X-Webhook-Batch"] = "true"
            headers["X-Batch-Size"] = str(batch_size)
        delivery = Delivery(
            seq=self._state.next_seq(),
            id=new_uuid(),
            event=event,
            idempotency_key=key,
            url=config.webhook_url,
            payload_version=config.payload_version.value,
            batch_size=batch_size,
            body=body.decode("utf-8"),
            headers=headers,
            created_at=self._state.clock.now(),
        )
        self._state.add_delivery(delivery)
        if delivery.url is None:
            delivery.state = "no_webhook_url"
        else:
            self.spawn(self._deliver(delivery, body))
        return delivery

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, body: bytes) -> None:
        schedule = list(self._config().retry_schedule_seconds)
        attempt = 1
        while True:
            if await self._attempt(delivery, body, attempt):
                delivery.state = "delivered"
                return
            if attempt > len(schedule):
                delivery.state = "failed"
                logger.info("webhook %s %s given up", delivery.event, delivery.idempotency_key)
                return
            delivery.state = "retrying"
            await asyncio.sleep(self._config().scaled(schedule[attempt - 1]))
            attempt += 1

    async def _attempt(self, delivery: Delivery, body: bytes, attempt: int) -> bool:
        """One POST; the time waiting for a slot is neither timed out nor counted as latency."""
        assert delivery.url is not None
        status: int | None = None
        error: str | None = None
        async with self._slot() as client:
            config = self._config()
            started = time.monotonic()
            at = self._state.clock.now()
            try:
                response = await client.post(
                    delivery.url,
                    content=body,
                    headers=delivery.headers,
                    timeout=config.scaled(config.webhook_timeout_seconds),
                )
                status = response.status_code
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.HTTPError as err:
                error = f"{type(err).__name__}: {err}"
            latency_ms = round((time.monotonic() - started) * 1000, 2)
        delivery.attempts.append(
            DeliveryAttempt(
                attempt=attempt, at=at, status_code=status, error=error, latency_ms=latency_ms
            )
        )
        # Kapso counts only a 200 as delivered; anything else (including 2xx others) is retried.
        return status == 200
