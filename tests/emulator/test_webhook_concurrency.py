"""Webhook delivery under load over real HTTP: requests in flight bounded, exactly once, retries."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter

import pytest

from kapso_emulator.config import DEFAULT_WEBHOOK_CONCURRENCY

from .conftest import (
    TIME_SCALE,
    RunningEmulator,
    WebhookReceiver,
    make_config,
    running_emulator,
)

pytestmark = pytest.mark.timeout(60)


async def burst(kapso: RunningEmulator, count: int) -> list[str]:
    """`count` users' messages through the control API (a few requests at a time); their wamids."""
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        async with gate:
            result = await kapso.inbound(phone=f"+5691{index:07d}", text=f"mensaje {index}")
            wamid: str = result["message"]["id"]
            return wamid

    return await asyncio.gather(*(one(index) for index in range(count)))


@pytest.mark.parametrize("concurrency", [None, 3])
async def test_a_burst_reaches_a_slow_receiver_bounded_and_exactly_once(
    receiver: WebhookReceiver, concurrency: int | None
) -> None:
    limit = concurrency or DEFAULT_WEBHOOK_CONCURRENCY
    create = {} if concurrency is None else {"webhook_concurrency": concurrency}
    receiver.delay_seconds = 0.02 if concurrency is None else 0.005
    count = 300 if concurrency is None else 120
    async with running_emulator(make_config(webhook_url=receiver.url), **create) as kapso:
        wamids = await burst(kapso, count)
        await kapso.drain()
        deliveries = await kapso.deliveries()

    # Every user is new: a conversation.created and a message.received each.
    assert len(receiver.requests) == 2 * count
    keys = Counter(r.headers["X-Idempotency-Key"] for r in receiver.requests)
    assert set(keys.values()) == {1}
    received = [
        json.loads(r.body)["message"]["id"]
        for r in receiver.requests
        if r.headers["X-Webhook-Event"] == "whatsapp.message.received"
    ]
    assert sorted(received) == sorted(wamids)
    assert receiver.max_in_flight == limit  # never more, and the slots were all used
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert {len(d["attempts"]) for d in deliveries} == {1}


async def test_a_delivery_waiting_to_retry_holds_no_slot(receiver: WebhookReceiver) -> None:
    # One slot; the first delivery fails and waits 50 Kapso seconds (0.5 s) for its retry.
    config = make_config(webhook_url=receiver.url, retry_schedule_seconds=[50.0])
    receiver.script = [500]
    async with running_emulator(config, webhook_concurrency=1) as kapso:
        await kapso.inbound()
        await kapso.drain()

    assert receiver.events() == [
        "whatsapp.conversation.created",
        "whatsapp.message.received",  # went out while the first one waited
        "whatsapp.conversation.created",
    ]
    first, other, retry = receiver.requests
    assert other.at - first.at < 50 * TIME_SCALE / 2
    assert retry.at - first.at >= 50 * TIME_SCALE * 0.9
    assert first.headers["X-Idempotency-Key"] == retry.headers["X-Idempotency-Key"]


async def test_retries_under_load_keep_their_schedule(receiver: WebhookReceiver) -> None:
    # Every delivery fails twice: 80 deliveries, 240 requests through 4 slots.
    config = make_config(webhook_url=receiver.url, retry_schedule_seconds=[10.0, 40.0])
    receiver.failures_per_delivery = 2
    receiver.delay_seconds = 0.002
    async with running_emulator(config, webhook_concurrency=4) as kapso:
        await burst(kapso, 40)
        await kapso.drain()
        deliveries = await kapso.deliveries()

    assert len(deliveries) == 80
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert receiver.max_in_flight <= 4
    by_key: dict[str, list[float]] = {}
    for request in receiver.requests:
        by_key.setdefault(request.headers["X-Idempotency-Key"], []).append(request.at)
    for delivery in deliveries:
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        times = by_key[delivery["idempotency_key"]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        for gap, nominal in zip(gaps, [10, 40], strict=True):
            # Never early; late only by the wait for a slot and the requests' own time.
            assert nominal * TIME_SCALE * 0.9 <= gap <= nominal * TIME_SCALE + 1.0


async def test_waiting_for_a_slot_is_not_part_of_the_timeout(receiver: WebhookReceiver) -> None:
    # A 0.2 s timeout; 21 deliveries of 0.05 s each through one slot take about 1 s in all.
    config = make_config(webhook_url=receiver.url, webhook_timeout_seconds=20.0)
    receiver.delay_seconds = 0.05
    async with running_emulator(config, webhook_concurrency=1) as kapso:
        await burst(kapso, 10)
        await kapso.inbound(phone="+56910000000", text="otra vez")
        await kapso.drain()
        deliveries = await kapso.deliveries()

    assert len(deliveries) == 21
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert all(len(d["attempts"]) == 1 for d in deliveries)
    assert all(d["attempts"][0]["latency_ms"] < 200 for d in deliveries)
    assert receiver.max_in_flight == 1


async def test_reset_cancels_deliveries_waiting_for_a_slot(receiver: WebhookReceiver) -> None:
    receiver.delay_seconds = 0.1
    async with running_emulator(
        make_config(webhook_url=receiver.url), webhook_concurrency=2
    ) as kapso:
        await burst(kapso, 25)
        assert (await kapso.client.post("/_emulator/reset")).status_code == 200
        seen = len(receiver.requests)
        health = (await kapso.client.get("/_emulator/health")).json()
        await asyncio.sleep(0.3)

    assert health["pending_tasks"] == 0
    assert seen < 50
    assert len(receiver.requests) <= seen + 2  # at most what was on the wire at the reset
