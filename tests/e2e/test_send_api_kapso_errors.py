"""Kapso's failures, injected in the emulator, reach the caller of the send API as honest
statuses: its validation → 422, a closed window → 409, our credentials → 502, its rate limit →
503 + Retry-After, an unknown outcome → 504 (settled later by status webhooks), 5xx → 502,
unreachable → 503."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.repositories.models import Message, MessageRole, OutboundMessage, OutboundStatus
from support.e2e import (
    SEND_API,
    LocalFlow,
    add_member,
    api_sends,
    assert_error,
    bearer,
    eventually,
    local_flow,
    open_window,
)
from support.store_data import make_member

pytestmark = pytest.mark.timeout(120)

MESSAGES = "*/messages"


def graph_error(code: int, message: str, details: str) -> dict[str, Any]:
    """Meta's Graph error envelope, as Kapso's proxy passes it on."""
    return {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbCdEf123",
        }
    }


@dataclass(frozen=True)
class KapsoFailure:
    """A fault Kapso answers a send with, and what our caller must see instead."""

    status: int
    body: Any
    expect_status: int
    expect_code: str
    message_contains: str
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: str | None = None


FAILURES: dict[str, KapsoFailure] = {
    "graph-400-invalid-parameter": KapsoFailure(
        400,
        graph_error(100, "(#100) Invalid parameter", "Parameter 'to' is not a valid number"),
        422,
        "kapso_rejected",
        "(#100) Invalid parameter (Parameter 'to' is not a valid number)",
    ),
    "kapso-422-validation": KapsoFailure(
        422,
        {"error": "Validation failed", "message": "text.body is too long"},
        422,
        "kapso_rejected",
        "Validation failed: text.body is too long",
    ),
    "graph-131047-window-closed": KapsoFailure(
        400,
        graph_error(
            131047,
            "(#131047) Re-engagement message",
            "More than 24 hours have passed since the customer last replied.",
        ),
        409,
        "outside_customer_service_window",
        "/api/whatsapp/send/template",
    ),
    "kapso-401-bad-key": KapsoFailure(
        401, {"error": "Invalid or missing API key"}, 502, "upstream_error", "KAPSO_API_KEY"
    ),
    "kapso-402-no-credits": KapsoFailure(
        402,
        {"error": "Insufficient credits", "code": "insufficient_credits"},
        502,
        "upstream_error",
        "Insufficient credits",
    ),
    "kapso-429-long-retry-after": KapsoFailure(
        429,
        {"error": "Rate limit exceeded", "message": "Too many requests."},
        503,
        "upstream_rate_limited",
        "Rate limit exceeded",
        headers={"Retry-After": "60"},
        retry_after="60",
    ),
    "kapso-500": KapsoFailure(
        500, {"error": "Internal server error"}, 502, "upstream_error", "Internal server error"
    ),
    "kapso-503": KapsoFailure(
        503, {"error": "Service unavailable"}, 502, "upstream_error", "Service unavailable"
    ),
}


async def _outbound_by_key(flow: LocalFlow, key: str, user_id: uuid.UUID) -> OutboundMessage:
    row = await flow.stores.outbound.find_outbound_by_idempotency_key(key, user_id=user_id)
    assert row is not None
    return row


@pytest.mark.parametrize("case", list(FAILURES))
async def test_a_kapso_failure_reaches_the_caller_as_an_honest_status(
    flow: LocalFlow, case: str
) -> None:
    failure = FAILURES[case]
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    await flow.fault(
        kind="status",
        path=MESSAGES,
        method="POST",
        status=failure.status,
        body=failure.body,
        headers=failure.headers,
    )
    key = f"fault-{case}"

    response = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"conversation_id": conversation_id}, "content": "Hola"},
        headers={**bearer(profile.id), "Idempotency-Key": key},
    )

    error = assert_error(response, failure.expect_status, failure.expect_code)
    assert failure.message_contains in error["message"]
    assert response.headers.get("Retry-After") == failure.retry_after
    row = await _outbound_by_key(flow, key, profile.id)
    assert row.status is OutboundStatus.FAILED
    assert row.send_attempts == 1
    assert row.wamid is None
    # Nothing reached the user, and nothing was added to the conversation.
    assert await api_sends(flow, profile.phone, expected=1, wait_seconds=0.3) == []
    conversation = await flow.stores.conversations.find_conversation_by_kapso_id(conversation_id)
    assert conversation is not None
    latest = await flow.stores.conversations.latest_message(
        conversation.id, role=MessageRole.ASSISTANT
    )
    assert latest is not None
    assert latest.content != "Hola"


@pytest.mark.parametrize(
    "case",
    [
        "graph-400-invalid-parameter",
        "graph-131047-window-closed",
        "kapso-401-bad-key",
        "kapso-429-long-retry-after",
        "kapso-500",
    ],
)
async def test_a_retry_with_the_same_key_after_a_failure_answers_like_the_first_time(
    flow: LocalFlow, case: str
) -> None:
    failure = FAILURES[case]
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    await flow.fault(
        kind="status",
        path=MESSAGES,
        method="POST",
        status=failure.status,
        body=failure.body,
        headers=failure.headers,
    )
    body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "Hola"}
    headers = {**bearer(profile.id), "Idempotency-Key": f"retry-{case}"}

    first = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
    retry = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)

    assert_error(first, failure.expect_status, failure.expect_code)
    if retry.status_code != 200:
        # Replaying the first answer is honest; so would be trying again (nothing was sent).
        assert_error(retry, failure.expect_status, failure.expect_code)
    await flow.drain_deliveries()
    assert len(await api_sends(flow, profile.phone, expected=2, wait_seconds=0.3)) <= 1


async def test_a_timeout_after_the_send_is_504_recorded_unknown_and_settled_by_webhooks(
    database_url: str,
) -> None:
    async with local_flow(database_url, kapso_timeout_seconds=1) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        conversation_id = await open_window(flow, profile.phone)
        # Status webhooks come seconds after the send (time scale 0.01): after our timeout.
        await flow.configure_emulator(status_delays={"sent": 300, "delivered": 350, "read": 400})
        await flow.fault(kind="timeout_after_send", path=MESSAGES, method="POST", seconds=10)
        body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "¿Llegó?"}
        headers = {**bearer(profile.id), "Idempotency-Key": "timeout-1"}

        response = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)

        error = assert_error(response, 504, "upstream_timeout")
        assert "may still be delivered" in error["message"]
        row = await _outbound_by_key(flow, "timeout-1", profile.id)
        assert row.status is OutboundStatus.UNKNOWN
        assert row.wamid is None
        # The emulator did send it; Kapso echoes our id back in the status webhooks.
        [sent] = await api_sends(flow, profile.phone, expected=1)
        assert sent["request"]["text"] == {"body": "¿Llegó?"}
        assert sent["request"]["biz_opaque_callback_data"] == str(row.id)
        # While the outcome is unknown, a retry with the key is told so and sends nothing.
        pending = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
        assert_error(pending, 504, "upstream_timeout")

        async def settled() -> OutboundMessage | None:
            current = await flow.stores.outbound.get_outbound(row.id)
            assert current is not None
            return current if current.status is OutboundStatus.READ else None

        final = await eventually(settled, within=15)
        assert final.wamid == sent["message_id"]
        found = await flow.stores.outbound.find_outbound_by_wamid(sent["message_id"])
        assert found is not None
        assert found.id == row.id
        # Settled: a retry with the key now gets the first (now known) result.
        replay = await flow.service.post(f"{SEND_API}/text", json=body, headers=headers)
        assert replay.status_code == 200, replay.text
        assert replay.json()["message_id"] == sent["message_id"]
        await flow.drain_deliveries()
        assert len(await api_sends(flow, profile.phone, expected=2, wait_seconds=0.3)) == 1

        # Once settled, the message the user got is in the conversation too, once.
        async def stored() -> Message | None:
            return await flow.stores.conversations.find_message_by_wamid(sent["message_id"])

        message = await eventually(stored)
        assert message.content == "¿Llegó?"
        assert message.role is MessageRole.ASSISTANT
        assert message.metadata.outbound_id == row.id
        assert message.metadata.sender_user_id == profile.id


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_kapso_unreachable_is_503_and_nothing_was_sent(database_url: str) -> None:
    async with local_flow(database_url, kapso_base_url=_closed_port_url()) as flow:
        accountant, company = await make_member(flow.seeder)
        client = await add_member(flow.seeder, company)
        assert client.phone is not None
        headers = {**bearer(accountant.id), "Idempotency-Key": "unreachable-1"}

        response = await flow.service.post(
            f"{SEND_API}/template",
            json={"phone_number": client.phone, "template_name": "hello_world"},
            headers=headers,
        )

        error = assert_error(response, 503, "service_unavailable")
        assert "nothing was sent" in error["message"]
        row = await _outbound_by_key(flow, "unreachable-1", accountant.id)
        assert row.status is OutboundStatus.FAILED
        assert await flow.outbox(client.phone, wait_seconds=0) == []


async def test_kapso_busy_with_the_conversation_is_503_to_retry_not_a_rejection(
    flow: LocalFlow,
) -> None:
    """Kapso's 409 "another message is already in-flight" outlasting the client's retries is
    transient: 503 with Retry-After, not a 422."""
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    await flow.fault(
        kind="status",
        path=MESSAGES,
        method="POST",
        status=409,
        times=None,
        body={
            "error": "Another message is already in-flight for this conversation. "
            "Please retry shortly."
        },
    )
    body = {"conversation_selector": {"conversation_id": conversation_id}, "content": "Hola"}
    response = await flow.service.post(f"{SEND_API}/text", json=body, headers=bearer(profile.id))
    assert_error(response, 503, "upstream_busy")
    assert response.headers["Retry-After"] == "2"
