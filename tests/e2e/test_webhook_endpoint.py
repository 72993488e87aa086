"""`POST /api/whatsapp/webhook` over real HTTP: what it refuses, records once, and answers.

Bodies are posted straight to the service (signed like Kapso signs them); the emulator only
receives the replies, so its 24-hour window check is off (it never saw these users write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.repositories.models import InboxState, MessageRole
from support.e2e import (
    LocalFlow,
    find_inbox_events,
    quiesce,
    sign,
    text_message_item,
    wait_inbox_done,
)
from support.store_data import make_member

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024


@pytest.fixture
async def flow(flow: LocalFlow) -> AsyncIterator[LocalFlow]:
    """The shared flow, left quiet at the end (see `quiesce`)."""
    started = datetime.now(UTC)
    yield flow
    await quiesce(flow, since=started)


@pytest.fixture
async def direct(flow: LocalFlow) -> LocalFlow:
    await flow.configure_emulator(window_mode="off")
    return flow


async def assert_nothing_recorded(flow: LocalFlow, *, wamid: str, key: str) -> None:
    assert await find_inbox_events(flow.stores.inbox, wamid=wamid) == []
    assert await find_inbox_events(flow.stores.inbox, key_prefix=key) == []


async def user_messages(flow: LocalFlow, kapso_conversation_id: str) -> list[Any]:
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
        kapso_conversation_id
    )
    if conversation is None:
        return []
    messages = await flow.stores.conversations.list_messages(conversation.id, limit=200)
    return [m for m in messages if m.role is MessageRole.USER]


# --- refused: 401, 400, 413 ----------------------------------------------------------------------


async def test_bad_or_missing_signature_is_401_and_records_nothing(direct: LocalFlow) -> None:
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    body = text_message_item(profile.phone)
    wamid = body["message"]["id"]
    raw = json.dumps(body).encode()
    key = f"e2e-sig-{uuid.uuid4()}"

    wrong = await direct.post_webhook(raw, key=key, signature=sign(raw, "not-the-secret"))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_signature"
    assert wrong.json()["error"]["message"]

    tampered = await direct.post_webhook(
        raw.replace(b"Hola", b"Chao"), key=key, signature=sign(raw)
    )
    assert tampered.status_code == 401
    assert tampered.json()["error"]["code"] == "invalid_signature"

    missing = await direct.post_webhook(raw, key=key, headers={"X-Webhook-Signature": ""})
    assert missing.status_code == 401
    # And with the header absent altogether (not merely empty).
    absent = await direct.service.post(
        "/api/whatsapp/webhook",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Webhook-Event": "whatsapp.message.received",
            "X-Idempotency-Key": key,
        },
    )
    assert absent.status_code == 401
    assert absent.json()["error"]["code"] == "invalid_signature"

    await assert_nothing_recorded(direct, wamid=wamid, key=key)
    assert await direct.outbox(profile.phone) == []


async def test_malformed_json_is_400_naming_the_problem(direct: LocalFlow) -> None:
    key = f"e2e-bad-json-{uuid.uuid4()}"
    wamid = f"wamid.e2e{uuid.uuid4().hex}"
    broken = b'{"message": {"id": "' + wamid.encode() + b'", "type": "text"'
    response = await direct.post_webhook(broken, key=key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert "not valid JSON" in error["message"]

    array = json.dumps([text_message_item("+56912345678", wamid=wamid)]).encode()
    response = await direct.post_webhook(array, key=key)
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]["message"]
    assert "list" in response.json()["error"]["message"]

    # Valid JSON, but not a Kapso message: a received event without its message.
    shapeless = json.dumps({"conversation": {"id": str(uuid.uuid4())}}).encode()
    response = await direct.post_webhook(shapeless, key=key)
    assert response.status_code == 400
    assert "message" in response.json()["error"]["message"]

    # A batch whose data is not a list.
    response = await direct.post_webhook(
        {"type": "whatsapp.message.received", "batch": True, "data": {"x": 1}},
        key=key,
        headers={"X-Webhook-Batch": "true"},
    )
    assert response.status_code == 400
    assert "data" in response.json()["error"]["message"]

    await assert_nothing_recorded(direct, wamid=wamid, key=key)


async def test_oversized_body_is_413_and_records_nothing(direct: LocalFlow) -> None:
    limit = direct.settings.webhook_max_body_bytes
    assert limit == MIB
    key = f"e2e-big-{uuid.uuid4()}"
    body = text_message_item("+56912345678", text="x" * (limit + 10))
    wamid = body["message"]["id"]
    raw = json.dumps(body).encode()
    assert len(raw) > limit

    response = await direct.post_webhook(raw, key=key)
    assert response.status_code == 413
    assert response.json()["error"]["message"].endswith(f"{limit} bytes")

    # Chunked (no Content-Length): refused while streaming, once the count passes the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    chunked = await direct.service.post(
        "/api/whatsapp/webhook",
        content=chunks(),
        headers={
            "Content-Type": "application/json",
            "X-Webhook-Event": "whatsapp.message.received",
            "X-Webhook-Signature": sign(raw),
            "X-Idempotency-Key": key,
        },
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.status_code == 413

    # A body exactly at the limit is read (and then judged on its merits: here, its signature).
    exact = b" " * limit
    at_limit = await direct.post_webhook(exact, key=key, signature=sign(b"other"))
    assert at_limit.status_code == 401

    await assert_nothing_recorded(direct, wamid=wamid, key=key)


async def test_a_lying_small_content_length_reads_only_what_it_declares(
    direct: LocalFlow,
) -> None:
    """A client declaring 64 bytes, then sending 2 MiB more: the request is the 64 bytes (a
    truncated JSON body: 400, though validly signed) and the rest is never taken as its body."""
    key = f"e2e-lie-{uuid.uuid4()}"
    body = text_message_item("+56912345678", text="y" * (2 * MIB))
    wamid = body["message"]["id"]
    raw = json.dumps(body).encode()
    declared = raw[:64]
    url = urlsplit(direct.service_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        "POST /api/whatsapp/webhook HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n"
        "Content-Type: application/json\r\n"
        "X-Webhook-Event: whatsapp.message.received\r\n"
        f"X-Webhook-Signature: {sign(declared)}\r\n"
        f"X-Idempotency-Key: {key}\r\n"
        "Content-Length: 64\r\n"
        "\r\n"
    ).encode()
    try:
        writer.write(head + declared)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
        # The rest of the "body" arrives: it can only be read as a (broken) next request.
        with contextlib.suppress(ConnectionError):
            writer.write(raw[64:])
            await asyncio.wait_for(writer.drain(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    assert answer["error"]["code"] == "invalid_payload"
    assert "not valid JSON" in answer["error"]["message"]
    await assert_nothing_recorded(direct, wamid=wamid, key=key)
    assert (await direct.post_webhook(b"{", key=key)).status_code == 400  # still serving


# --- accepted ------------------------------------------------------------------------------------


async def test_unknown_event_type_is_stored_acknowledged_and_done(direct: LocalFlow) -> None:
    key = f"e2e-unknown-{uuid.uuid4()}"
    body = {"something": {"new": True, "id": key}}
    response = await direct.post_webhook(body, event="whatsapp.something.new", key=key)
    assert response.status_code == 200
    assert response.json() == {"received": 1, "accepted": 1, "duplicates": 0}

    [stored] = await wait_inbox_done(direct.stores.inbox, key_prefix=key)
    assert stored.event == "whatsapp.something.new"
    assert stored.idempotency_key == key
    assert stored.payload["body"] == body
    assert stored.attempts == 1
    assert stored.last_error is None

    again = await direct.post_webhook(body, event="whatsapp.something.new", key=key)
    assert again.json() == {"received": 1, "accepted": 0, "duplicates": 1}


async def test_same_key_twice_and_same_wamid_under_a_new_key_are_duplicates(
    direct: LocalFlow,
) -> None:
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    body = text_message_item(profile.phone, text="¿Llegó mi factura?")
    wamid = body["message"]["id"]
    key = f"e2e-dup-{uuid.uuid4()}"

    first = await direct.post_webhook(body, key=key)
    assert first.status_code == 200
    assert first.json() == {"received": 1, "accepted": 1, "duplicates": 0}
    retry = await direct.post_webhook(body, key=key)
    assert retry.json() == {"received": 1, "accepted": 0, "duplicates": 1}
    # Kapso (or Meta) re-sending the same message as a new delivery.
    resent = await direct.post_webhook(body, key=f"e2e-dup-{uuid.uuid4()}")
    assert resent.json() == {"received": 1, "accepted": 0, "duplicates": 1}
    # Re-serialised differently and without a key: still the same wamid and event.
    reshaped = json.dumps(body, indent=2).encode()
    no_key = await direct.post_webhook(reshaped)
    assert no_key.json() == {"received": 1, "accepted": 0, "duplicates": 1}

    await wait_inbox_done(direct.stores.inbox, wamid=wamid)
    replies = await direct.outbox(profile.phone, wait_count=1)
    assert len(await user_messages(direct, body["conversation"]["id"])) == 1
    await direct.drain_deliveries()
    assert len(await direct.outbox(profile.phone)) == len(replies) == 1


async def test_twenty_concurrent_copies_store_one_message_and_send_one_reply(
    direct: LocalFlow,
) -> None:
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    body = text_message_item(profile.phone, text="Hola, una sola vez")
    wamid = body["message"]["id"]
    raw = json.dumps(body).encode()
    shared_keys = [f"e2e-burst-{uuid.uuid4()}" for _ in range(3)]
    # 20 copies: 12 under 3 shared keys (retries), 8 under keys of their own (re-sends).
    keys = [shared_keys[i % 3] for i in range(12)] + [f"e2e-burst-{uuid.uuid4()}" for _ in range(8)]

    responses = await asyncio.gather(*(direct.post_webhook(raw, key=k) for k in keys))
    assert [r.status_code for r in responses] == [200] * 20
    summaries = [r.json() for r in responses]
    assert sum(s["accepted"] for s in summaries) == 1
    assert sum(s["duplicates"] for s in summaries) == 19

    [event] = await wait_inbox_done(direct.stores.inbox, wamid=wamid)
    assert event.event == "whatsapp.message.received"
    stored = await user_messages(direct, body["conversation"]["id"])
    assert [m.metadata.whatsapp_message_id for m in stored] == [wamid]
    await direct.drain_deliveries()
    replies = await direct.outbox(profile.phone, wait_count=1)
    assert len(replies) == 1
    assert replies[0]["request"]["context"] == {"message_id": wamid}


@pytest.mark.parametrize("batch_header", [True, False], ids=["header", "body-flag-only"])
async def test_a_batch_of_three_stores_three_messages_and_answers_each(
    direct: LocalFlow, batch_header: bool
) -> None:
    """A batch is several messages: we store and answer each one (3 messages → 3 replies),
    exactly as if Kapso had delivered them one by one."""
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    conversation_id = str(uuid.uuid4())
    items = [
        text_message_item(profile.phone, text=f"Mensaje {n}", conversation_id=conversation_id)
        for n in range(3)
    ]
    wamids = [item["message"]["id"] for item in items]
    batch = {"type": "whatsapp.message.received", "batch": True, "data": items}
    key = f"e2e-batch-{uuid.uuid4()}"
    headers = {"X-Webhook-Batch": "true", "X-Batch-Size": "3"} if batch_header else {}

    response = await direct.post_webhook(batch, key=key, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": 3, "accepted": 3, "duplicates": 0}
    again = await direct.post_webhook(batch, key=key, headers=headers)
    assert again.json() == {"received": 3, "accepted": 0, "duplicates": 3}

    events = await wait_inbox_done(direct.stores.inbox, key_prefix=key, count=3)
    assert [e.wamid for e in events] == wamids
    stored = await user_messages(direct, conversation_id)
    assert [m.metadata.whatsapp_message_id for m in stored] == wamids
    assert [m.content for m in stored] == ["Mensaje 0", "Mensaje 1", "Mensaje 2"]

    await direct.drain_deliveries()
    replies = await direct.outbox(profile.phone, wait_count=3)
    assert len(replies) == 3
    assert [r["request"]["context"]["message_id"] for r in replies] == wamids

    # The same messages re-sent one by one (new keys) are duplicates.
    for item in items:
        single = await direct.post_webhook(item, key=f"e2e-batch-{uuid.uuid4()}")
        assert single.json() == {"received": 1, "accepted": 0, "duplicates": 1}


async def test_an_accepted_delivery_is_recorded_before_the_answer(direct: LocalFlow) -> None:
    """Ack only after the insert committed: the event is readable as soon as 200 arrives."""
    body = text_message_item("+56987654321")
    wamid = body["message"]["id"]
    response = await direct.post_webhook(body, key=f"e2e-commit-{uuid.uuid4()}")
    assert response.status_code == 200
    rows = await find_inbox_events(direct.stores.inbox, wamid=wamid)
    assert len(rows) == 1
    assert rows[0].state in (InboxState.PENDING, InboxState.PROCESSING, InboxState.DONE)


async def test_the_answer_does_not_wait_for_kapso(direct: LocalFlow) -> None:
    """No Kapso call in the request: with Kapso answering after 1.5 s, the ack is still fast."""
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    await direct.fault(kind="latency", seconds=1.5, times=2)
    body = text_message_item(profile.phone)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await direct.post_webhook(body, key=f"e2e-fast-{uuid.uuid4()}")
    elapsed = loop.time() - started
    assert response.status_code == 200
    assert elapsed < 1.0, elapsed
    replies = await direct.outbox(profile.phone, wait_count=1, wait_seconds=20)
    assert len(replies) == 1


async def test_a_batch_repeating_a_message_records_it_once(direct: LocalFlow) -> None:
    profile, _ = await make_member(direct.seeder)
    assert profile.phone is not None
    conversation_id = str(uuid.uuid4())
    item = text_message_item(profile.phone, text="Repetido", conversation_id=conversation_id)
    other = text_message_item(profile.phone, text="Distinto", conversation_id=conversation_id)
    batch = {"type": "whatsapp.message.received", "batch": True, "data": [item, other, item]}
    key = f"e2e-batch-dup-{uuid.uuid4()}"

    response = await direct.post_webhook(batch, key=key, headers={"X-Webhook-Batch": "true"})
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "accepted": 2, "duplicates": 1}
    await wait_inbox_done(direct.stores.inbox, key_prefix=key, count=2)
    stored = await user_messages(direct, conversation_id)
    assert [m.content for m in stored] == ["Repetido", "Distinto"]
    assert len(await direct.outbox(profile.phone, wait_count=2)) == 2


async def test_signature_forms_kapso_may_send_are_accepted(direct: LocalFlow) -> None:
    """Lowercase hex is Kapso's form; a `sha256=` prefix or uppercase hex verify too."""
    for form in ("sha256={}", "{}"):
        body = text_message_item("+56987654321")
        raw = json.dumps(body).encode()
        signature = form.format(sign(raw))
        response = await direct.post_webhook(raw, signature=signature)
        assert response.status_code == 200, (form, response.text)
    body = text_message_item("+56987654321")
    raw = json.dumps(body).encode()
    response = await direct.post_webhook(raw, signature=sign(raw).upper())
    assert response.status_code == 200


async def test_an_empty_signed_body_is_400(direct: LocalFlow) -> None:
    response = await direct.post_webhook(b"")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
