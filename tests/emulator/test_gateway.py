"""Auth, rate limits and injected faults (the gateway in front of every Kapso endpoint)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import API_KEY, PHONE_NUMBER_ID, RunningEmulator

pytestmark = pytest.mark.timeout(30)

CONVERSATIONS = "/platform/v1/whatsapp/conversations"


async def test_api_key_is_required(kapso: RunningEmulator) -> None:
    async with httpx.AsyncClient(base_url=kapso.url) as anonymous:
        missing = await anonymous.get(CONVERSATIONS)
        bearer = await anonymous.get(
            kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        control = await anonymous.get("/_emulator/health")

    assert missing.status_code == 401
    assert set(missing.json()) == {"error"}
    assert bearer.status_code == 200
    assert control.status_code == 200  # the control API is not Kapso's: no key


async def test_pinned_api_key(kapso: RunningEmulator) -> None:
    await kapso.configure(api_key="the-one")

    wrong = await kapso.client.get(CONVERSATIONS)
    right = await kapso.client.get(CONVERSATIONS, headers={"X-API-Key": "the-one"})

    assert wrong.status_code == 401
    assert right.status_code == 200


async def test_rate_limit_headers_and_429(kapso: RunningEmulator) -> None:
    await kapso.configure(rate_limit_per_minute=3)

    answers = [await kapso.client.get(CONVERSATIONS) for _ in range(4)]
    other_key = await kapso.client.get(CONVERSATIONS, headers={"X-API-Key": "another"})
    await kapso.client.post("/_emulator/clock/advance", json={"seconds": 60})
    next_minute = await kapso.client.get(CONVERSATIONS)

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    limited = answers[-1]
    assert limited.headers["Retry-After"] == "60"
    assert limited.json()["error"] == "Rate limit exceeded"
    assert "message" in limited.json()
    assert other_key.status_code == 200
    assert next_minute.status_code == 200


async def test_status_fault_n_times_then_ok(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    fault = await kapso.client.post(
        "/_emulator/faults",
        json={"kind": "status", "path": "*/messages", "method": "POST", "status": 409, "times": 2},
    )
    assert fault.status_code == 201

    answers = [await kapso.send_text(f"intento {i}") for i in range(3)]

    assert [a.status_code for a in answers] == [409, 409, 200]
    assert answers[0].json() == {
        "error": "Another message is already in-flight for this conversation. Please retry shortly."
    }
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert [e["content"] for e in outbox] == ["intento 2"]
    faults = (await kapso.client.get("/_emulator/faults")).json()["data"]
    assert faults[0]["hits"] == 2


async def test_status_fault_with_a_graph_body(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    graph = {
        "error": {"message": "(#131056) Pair rate limit", "type": "OAuthException", "code": 131056}
    }
    await kapso.client.post(
        "/_emulator/faults",
        json={"kind": "status", "path": "*/messages", "status": 400, "body": graph},
    )

    answer = await kapso.send_text()

    assert answer.status_code == 400
    assert answer.json() == graph


async def test_latency_fault(kapso: RunningEmulator) -> None:
    await kapso.client.post(
        "/_emulator/faults", json={"kind": "latency", "path": CONVERSATIONS, "seconds": 0.3}
    )

    started = time.monotonic()
    slow = await kapso.client.get(CONVERSATIONS)
    slow_seconds = time.monotonic() - started
    started = time.monotonic()
    await kapso.client.get(CONVERSATIONS)
    fast_seconds = time.monotonic() - started

    assert slow.status_code == 200
    assert slow_seconds >= 0.3
    assert fast_seconds < 0.3


async def test_dropped_connection(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    await kapso.client.post("/_emulator/faults", json={"kind": "drop", "path": "*/messages"})

    with pytest.raises(httpx.RemoteProtocolError):
        await kapso.send_text("perdido")
    retry = await kapso.send_text("de nuevo")

    assert retry.status_code == 200
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert [e["content"] for e in outbox] == ["de nuevo"]


async def test_read_timeout_after_the_send_was_recorded(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    await kapso.client.post(
        "/_emulator/faults", json={"kind": "timeout_after_send", "path": "*/messages", "seconds": 5}
    )

    with pytest.raises(httpx.ReadTimeout):
        await kapso.send_text("¿llegó?", biz_opaque_callback_data="out_42", read_timeout=0.5)

    # The client cannot know, but the message went out: the outbox and history show it.
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert [e["request"]["biz_opaque_callback_data"] for e in outbox] == ["out_42"]
    await asyncio.sleep(0)


async def test_faults_can_be_listed_and_removed(kapso: RunningEmulator) -> None:
    created = (
        await kapso.client.post("/_emulator/faults", json={"kind": "status", "times": None})
    ).json()

    blocked = await kapso.client.get(CONVERSATIONS)
    removed = await kapso.client.delete(f"/_emulator/faults/{created['id']}")
    unblocked = await kapso.client.get(CONVERSATIONS)

    assert blocked.status_code == 500
    assert removed.json() == {"ok": True}
    assert unblocked.status_code == 200
