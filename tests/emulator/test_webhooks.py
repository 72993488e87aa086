"""Webhook delivery over real HTTP both ways: signature, headers, retries, batches, statuses."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import SECRET, TIME_SCALE, USER, USER_WA_ID, RunningEmulator, WebhookReceiver

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path("/work/shared/fixtures/kapso-webhooks")


def _keys(value: Any) -> Any:
    """The nested key structure of a JSON value (for comparing shapes, not values)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return type(value).__name__


def _subset(small: Any, big: Any, path: str = "") -> list[str]:
    """Keys present in `small` but missing in `big` (recursively)."""
    missing: list[str] = []
    if isinstance(small, dict) and isinstance(big, dict):
        for key, value in small.items():
            if key not in big:
                missing.append(path + "." + key)
            else:
                missing += _subset(value, big[key], path + "." + key)
    return missing


async def test_signature_verifies_over_the_raw_body(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    await kapso_hooked.inbound(text="Hola, ¿cuánto IVA debo?", name="María González")
    await kapso_hooked.drain()

    assert receiver.events() == ["whatsapp.conversation.created", "whatsapp.message.received"]
    for request in receiver.requests:
        expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Webhook-Signature"] == expected
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Webhook-Payload-Version"] == "v2"
        assert len(request.headers["X-Idempotency-Key"]) == 36
    assert "¿cuánto".encode() in receiver.requests[1].body  # raw UTF-8, not \u escapes


async def test_inbound_payload_has_the_fixture_shape(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    await kapso_hooked.inbound(text="Hola", name="María González")
    await kapso_hooked.inbound(type="image", caption="Boleta de compra")
    await kapso_hooked.inbound(type="button_reply", reply_id="opt1", reply_title="Opción 1")
    await kapso_hooked.drain()

    bodies = [
        json.loads(r.body)
        for r in receiver.requests
        if r.headers["X-Webhook-Event"] == "whatsapp.message.received"
    ]
    text, image, button = bodies
    for fixture_name, body in [("text", text), ("image", image), ("button_reply", button)]:
        fixture = json.loads(
            (FIXTURES / "v2" / f"message.received.{fixture_name}.json").read_text()
        )
        missing = _subset(_keys(fixture), _keys(body))
        # A button reply quotes a message; with nothing sent before, there is no context.
        missing = [m for m in missing if m != ".message.context"]
        assert missing == [], fixture_name
    assert text["message"]["from"] == USER_WA_ID
    assert text["conversation"]["phone_number"] == USER
    assert text["conversation"]["kapso"]["contact_name"] == "María González"
    assert text["is_new_conversation"] is True
    assert image["is_new_conversation"] is False
    assert image["message"]["image"]["caption"] == "Boleta de compra"
    assert button["message"]["interactive"]["button_reply"] == {"id": "opt1", "title": "Opción 1"}
    # The media link really downloads.
    media_url = image["message"]["kapso"]["media_url"]
    download = await kapso_hooked.client.get(media_url)
    assert download.content.startswith(b"\x89PNG")


async def test_status_events_in_order_echo_biz_opaque_callback_data(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    await kapso_hooked.inbound()
    await kapso_hooked.drain()
    receiver.requests.clear()

    sent = await kapso_hooked.send_text("Tu IVA es $152.300", biz_opaque_callback_data="out_7f3a2c")
    await kapso_hooked.drain()

    wamid = sent.json()["messages"][0]["id"]
    assert receiver.events() == [
        "whatsapp.message.sent",
        "whatsapp.message.delivered",
        "whatsapp.message.read",
    ]
    bodies = [json.loads(r.body) for r in receiver.requests]
    for body, status in zip(bodies, ["sent", "delivered", "read"], strict=True):
        message = body["message"]
        assert message["id"] == wamid
        assert message["to"] == USER_WA_ID
        assert message["kapso"]["direction"] == "outbound"
        assert message["kapso"]["origin"] == "cloud_api"
        assert message["kapso"]["status"] == status
        [raw] = message["kapso"]["statuses"]
        assert raw["status"] == status
        assert raw["biz_opaque_callback_data"] == "out_7f3a2c"
    fixture = json.loads((FIXTURES / "v2" / "message.delivered.json").read_text())
    assert _subset(_keys(fixture), _keys(bodies[1])) == []
    # The delays are configured (1 and 3 Kapso seconds), scaled.
    gap = receiver.requests[2].at - receiver.requests[0].at
    assert gap >= 3 * TIME_SCALE * 0.9


async def test_undeliverable_number_gets_a_failed_event(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    await kapso_hooked.configure(undeliverable_numbers=[USER_WA_ID])
    await kapso_hooked.inbound()
    await kapso_hooked.drain()
    receiver.requests.clear()

    await kapso_hooked.send_text()
    await kapso_hooked.drain()

    assert receiver.events() == ["whatsapp.message.sent", "whatsapp.message.failed"]
    failed = json.loads(receiver.requests[1].body)
    assert failed["message"]["kapso"]["statuses"][0]["errors"][0]["code"] == 131026


async def test_retries_keep_the_idempotency_key_and_follow_the_schedule(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    receiver.script = [500, 503, 404]  # three failures, then 200

    await kapso_hooked.client.post("/_emulator/conversations/none/end")  # 404: nothing sent
    conv = (await kapso_hooked.inbound())["conversation_id"]
    await kapso_hooked.drain()
    receiver.requests.clear()
    receiver.script = [500, 503, 404]
    await kapso_hooked.client.post(f"/_emulator/conversations/{conv}/end")
    await kapso_hooked.drain()

    attempts = receiver.requests
    assert [r.headers["X-Webhook-Event"] for r in attempts] == ["whatsapp.conversation.ended"] * 4
    assert len({r.headers["X-Idempotency-Key"] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    for gap, nominal in zip(gaps, [10, 40, 90], strict=True):
        assert nominal * TIME_SCALE * 0.9 <= gap <= nominal * TIME_SCALE + 0.5
    [delivery] = await kapso_hooked.deliveries("whatsapp.conversation.ended")
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 404, 200]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])


async def test_gives_up_after_the_last_retry(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    receiver.script = [500] * 10
    await kapso_hooked.configure(retry_schedule_seconds=[1, 1, 1])

    await kapso_hooked.inbound()
    await kapso_hooked.drain()

    deliveries = await kapso_hooked.deliveries("whatsapp.message.received")
    assert deliveries[0]["state"] == "failed"
    assert len(deliveries[0]["attempts"]) == 4


async def test_a_slow_answer_is_retried(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    # Kapso waits 10 s; scaled by 0.02 that is 0.2 s, and the receiver takes 0.5 s.
    await kapso_hooked.configure(
        webhook_timeout_seconds=10, time_scale=0.02, retry_schedule_seconds=[1, 1, 1]
    )
    receiver.delay_seconds = 0.5

    await kapso_hooked.client.post("/_emulator/inbound", json={"phone": USER, "text": "Hola"})
    await kapso_hooked.drain()

    deliveries = await kapso_hooked.deliveries("whatsapp.message.received")
    assert [a["error"] for a in deliveries[0]["attempts"]] == ["timeout"] * 4
    assert deliveries[0]["state"] == "failed"
    received = [
        r for r in receiver.requests if r.headers["X-Webhook-Event"] == "whatsapp.message.received"
    ]
    assert len(received) == 4
    assert len({r.headers["X-Idempotency-Key"] for r in received}) == 1


async def test_batching(kapso_hooked: RunningEmulator, receiver: WebhookReceiver) -> None:
    await kapso_hooked.configure(batching=True, batch_window_seconds=5, batch_max_size=3)

    for index in range(4):
        await kapso_hooked.inbound(text=f"parte {index}")
    await kapso_hooked.drain()

    batches = [r for r in receiver.requests if r.headers.get("X-Webhook-Batch") == "true"]
    assert [r.headers["X-Batch-Size"] for r in batches] == ["3", "1"]
    first = json.loads(batches[0].body)
    assert first["type"] == "whatsapp.message.received"
    assert first["batch"] is True
    assert [item["message"]["text"]["body"] for item in first["data"]] == [
        "parte 0",
        "parte 1",
        "parte 2",
    ]
    assert batches[0].headers["X-Webhook-Event"] == "whatsapp.message.received"
    fixture = json.loads((FIXTURES / "v2" / "message.received.batch.json").read_text())
    assert _subset(_keys(fixture), _keys(first)) == []


async def test_v1_payloads(kapso_hooked: RunningEmulator, receiver: WebhookReceiver) -> None:
    await kapso_hooked.configure(payload_version="v1")

    await kapso_hooked.inbound(text="Hola, necesito mi certificado", name="María González")
    await kapso_hooked.drain()

    received = receiver.requests[-1]
    assert received.headers["X-Webhook-Payload-Version"] == "v1"
    body = json.loads(received.body)
    fixture = json.loads((FIXTURES / "v1" / "message.received.text.json").read_text())
    assert _subset(_keys(fixture), _keys(body)) == []
    assert body["message"]["content"] == "Hola, necesito mi certificado"
    assert body["conversation"]["contact_name"] == "María González"


async def test_conversation_created_and_ended_events(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    conv = (await kapso_hooked.inbound())["conversation_id"]
    await kapso_hooked.client.patch(
        f"/platform/v1/whatsapp/conversations/{conv}",
        json={"whatsapp_conversation": {"status": "ended"}},
    )
    await kapso_hooked.inbound(text="Hola de nuevo")
    await kapso_hooked.drain()

    assert receiver.events() == [
        "whatsapp.conversation.created",
        "whatsapp.message.received",
        "whatsapp.conversation.ended",
        "whatsapp.conversation.created",
        "whatsapp.message.received",
    ]
    ended = json.loads(receiver.requests[2].body)
    fixture = json.loads((FIXTURES / "v2" / "conversation.ended.json").read_text())
    assert _subset(_keys(fixture), _keys(ended)) == []
    assert ended["conversation"]["status"] == "ended"
    assert json.loads(receiver.requests[4].body)["is_new_conversation"] is True


async def test_idle_conversations_end_when_the_clock_moves(
    kapso_hooked: RunningEmulator, receiver: WebhookReceiver
) -> None:
    await kapso_hooked.inbound()
    await kapso_hooked.client.post("/_emulator/clock/advance", json={"hours": 24})
    await kapso_hooked.drain()

    assert receiver.events()[-1] == "whatsapp.conversation.ended"


async def test_business_app_echo(kapso_hooked: RunningEmulator, receiver: WebhookReceiver) -> None:
    await kapso_hooked.inbound()
    await kapso_hooked.drain()
    receiver.requests.clear()

    answer = await kapso_hooked.client.post(
        "/_emulator/business_app", json={"phone": USER, "text": "Hola, te escribe Camila"}
    )
    await kapso_hooked.drain()

    assert answer.status_code == 201
    sent = json.loads(receiver.requests[0].body)
    assert receiver.events()[0] == "whatsapp.message.sent"
    assert sent["message"]["kapso"]["origin"] == "business_app"
    fixture = json.loads((FIXTURES / "v2" / "message.sent.business_app.json").read_text())
    assert _subset(_keys(fixture), _keys(sent)) == []
    assert (await kapso_hooked.client.get("/_emulator/outbox")).json()["data"] == []
