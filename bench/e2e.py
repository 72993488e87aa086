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

from bench.common import client_limits, percentile
from bench.payloads import Sender


async def say(client: httpx.AsyncClient, sender: Sender, text: str) -> str:
    """The user writes; returns the wamid the emulator gave the message."""
    response = await client.post(
        "/_emulator/inbound", json={"phone": sender.phone, "text": text, "name": sender.name}
    )
    response.raise_for_status()
    wamid: str = response.json()["message"]["id"]
    return wamid


async def messages(client: httpx.AsyncClient, since: float = 0.0) -> list[dict[str, Any]]:
    """The emulator's messages recorded at `since` (a Unix time) or later."""
    response = await client.get("/_bench/messages", params={"since": since}, timeout=120)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def wait_replies(
    client: httpx.AsyncClient, wamids: Sequence[str], *, within: float, since: float = 0.0
) -> dict[str, list[dict[str, Any]]]:
    """Wait until every message in `wamids` has a reply (or `within` s); replies by wamid.

    `since`: when the first of them was sent (only messages from then on are read)."""
    wanted = set(wamids)
    deadline = time.monotonic() + within
    while True:
        replies: dict[str, list[dict[str, Any]]] = {}
        for message in await messages(client, since):
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
    rate: float,
    count: int,
    concurrency: int = 32,
    within: float = 300.0,
) -> dict[str, Any]:
    """Send `count` messages round-robin over `senders` at `rate` per second (open loop: a
    message every 1/rate s whatever happened before), then wait (up to `within` seconds) for
    the replies. A message the emulator did not take (a transport error) is counted apart."""
    limits = client_limits(concurrency)
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60, limits=limits) as client:
        late = 0
        # A second of slack: the emulator's clock is this machine's.
        since = time.time() - 1.0
        started = time.monotonic()
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
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        offered_seconds = time.monotonic() - started
        wamids = [outcome for outcome in outcomes if isinstance(outcome, str)]
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors and not all(isinstance(error, httpx.TransportError) for error in errors):
            raise next(error for error in errors if not isinstance(error, httpx.TransportError))
        replies = await wait_replies(client, wamids, within=within, since=since)
        sent = set(wamids)
        inbound_at = {m["id"]: m["at"] for m in await messages(client, since) if m["id"] in sent}
    latencies = sorted(
        (min(r["at"] for r in replies[w]) - inbound_at[w]) * 1000 for w in wamids if w in replies
    )
    first_in = min(inbound_at.values()) if inbound_at else 0.0
    last_reply = max((r["at"] for rs in replies.values() for r in rs), default=first_in)
    span = max(last_reply - first_in, 1e-9)
    return {
        "messages": len(wamids),
        "offer_errors": len(errors),
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
