"""End to end: a user writes (the emulator) → webhook → inbox → worker → reply at the emulator.

Latency is measured on the emulator's clock alone: from the moment it recorded the user's
message (just before delivering the webhook) to the moment it accepted the reply that quotes
that message. The driver plays the users through the control API (`/_emulator/inbound`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.common import percentile
from bench.payloads import Sender


async def say(client: httpx.AsyncClient, sender: Sender, text: str) -> str:
    """The user writes; returns the wamid the emulator gave the message."""
    response = await client.post(
        "/_emulator/inbound", json={"phone": sender.phone, "text": text, "name": sender.name}
    )
    response.raise_for_status()
    wamid: str = response.json()["message"]["id"]
    return wamid


async def messages(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/_bench/messages", timeout=120)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def wait_replies(
    client: httpx.AsyncClient, wamids: Sequence[str], *, within: float
) -> dict[str, list[dict[str, Any]]]:
    """Wait until every message in `wamids` has a reply (or `timeout`); replies by wamid."""
    wanted = set(wamids)
    deadline = time.monotonic() + within
    while True:
        replies: dict[str, list[dict[str, Any]]] = {}
        for message in await messages(client):
            if message["direction"] == "outbound" and message["reply_to"] in wanted:
                replies.setdefault(message["reply_to"], []).append(message)
        if len(replies) >= len(wanted) or time.monotonic() > deadline:
            return replies
        await asyncio.sleep(0.5)


async def warm_up(client: httpx.AsyncClient, senders: Sequence[Sender]) -> None:
    """Each user writes once and is answered: conversation stored, identity cached."""
    wamids = [await say(client, sender, "Hola") for sender in senders]
    replies = await wait_replies(client, wamids, within=60)
    if len(replies) < len(wamids):
        raise RuntimeError(f"warm-up: {len(replies)} of {len(wamids)} users were answered")


async def drive(
    emulator_url: str,
    senders: Sequence[Sender],
    *,
    rate: float | None,
    count: int,
    concurrency: int = 32,
    within: float = 300.0,
) -> dict[str, Any]:
    """Send `count` messages round-robin over `senders`: at `rate` per second (open loop), or
    as fast as the emulator takes them (`rate=None`: saturation). Then wait (up to `within`
    seconds) for the replies."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60, limits=limits) as client:
        wamids: list[str] = []
        late = 0
        started = time.monotonic()
        if rate is not None:
            tasks: list[asyncio.Task[str]] = []
            for index in range(count):
                due = started + index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.05:
                    late += 1
                sender = senders[index % len(senders)]
                tasks.append(asyncio.create_task(say(client, sender, f"Mensaje {index}")))
            wamids = list(await asyncio.gather(*tasks))
        else:
            queue = list(range(count))

            async def injector() -> None:
                while queue:
                    index = queue.pop()
                    wamids.append(await say(client, senders[index % len(senders)], f"M {index}"))

            await asyncio.gather(*(injector() for _ in range(concurrency)))
        offered_seconds = time.monotonic() - started
        replies = await wait_replies(client, wamids, within=within)
        inbound_at = {m["id"]: m["at"] for m in await messages(client) if m["id"] in set(wamids)}
    latencies = sorted(
        (min(r["at"] for r in replies[w]) - inbound_at[w]) * 1000 for w in wamids if w in replies
    )
    first_in = min(inbound_at.values()) if inbound_at else 0.0
    last_reply = max((r["at"] for rs in replies.values() for r in rs), default=first_in)
    span = max(last_reply - first_in, 1e-9)
    return {
        "messages": count,
        "users": len(senders),
        "offered_rate_per_s": round(count / offered_seconds, 1),
        "target_rate_per_s": rate,
        "late_sends": late,
        "replied": len(replies),
        "replies_total": sum(len(rs) for rs in replies.values()),
        "sustained_msgs_per_s": round(len(replies) / span, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(latencies[-1], 1) if latencies else 0.0,
        },
    }
