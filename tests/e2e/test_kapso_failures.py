"""Kapso failing end to end: down for a while (5xx), answering too late (timeout after the send),
down for good (the event goes dead, an operator replays it). Always one reply, never two."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.repositories.conversations import ConversationStore
from app.repositories.models import InboxEvent, InboxState, MessageRole, OutboundStatus
from app.services.whatsapp.responder import ResponderRequest
from support.e2e import (
    LocalFlow,
    eventually,
    find_inbox_events,
    local_flow,
    service_role_token,
    user_token,
)
from support.store_data import make_member

pytestmark = pytest.mark.timeout(180)

RECEIVED = "whatsapp.message.received"
SENT_STATES = {OutboundStatus.SENT, OutboundStatus.DELIVERED, OutboundStatus.READ}
# Marking a message read (with the typing indicator) is a POST to the same `*/messages` path as
# a send, and the client retries it; without client retries every fault hits one request.
NO_CLIENT_RETRIES: dict[str, Any] = {"kapso_max_retries": 0}
EVENTS_URL = "/api/whatsapp/admin/events"


async def _received_event(flow: LocalFlow, wamid: str) -> InboxEvent:
    (event,) = await find_inbox_events(flow.stores.inbox, wamid=wamid, event=RECEIVED)
    return event


async def _wait_state(
    flow: LocalFlow, wamid: str, state: InboxState, *, within: float = 30.0
) -> InboxEvent:
    async def reached() -> InboxEvent | None:
        events = await find_inbox_events(flow.stores.inbox, wamid=wamid, event=RECEIVED)
        assert len(events) <= 1
        return events[0] if events and events[0].state is state else None

    event: InboxEvent = await eventually(reached, within=within, interval=0.1)
    return event


async def _faults(flow: LocalFlow) -> list[dict[str, Any]]:
    response = await flow.control.get("/_emulator/faults")
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_kapso_down_then_back_the_worker_retries_and_replies_once(
    database_url: str,
) -> None:
    async with local_flow(database_url, **NO_CLIENT_RETRIES) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        # Four refusals: the mark-read and the send of two attempts.
        await flow.fault(kind="status", status=503, path="*/messages", method="POST", times=4)
        sent = await flow.say(profile.phone, "Hola, ¿me ayudas con el IVA?")
        wamid = sent["message"]["id"]

        event = await _wait_state(flow, wamid, InboxState.DONE)
        assert event.attempts > 1
        (fault,) = await _faults(flow)
        assert fault["hits"] >= fault["times"]

        await flow.drain_deliveries()
        replies = await flow.outbox(profile.phone, wait_count=2, wait_seconds=1)
        assert len(replies) == 1
        assert replies[0]["request"]["context"] == {"message_id": wamid}
        (row,) = await flow.stores.outbound.list_outbound_for_inbox_event(event.id)
        assert row.status in SENT_STATES
        assert row.wamid == replies[0]["message_id"]
        # The refused attempts were counted: a send was tried more than once, sent once.
        assert row.send_attempts > 1


async def test_send_timing_out_after_kapso_took_it_is_settled_never_resent(
    database_url: str,
) -> None:
    async with local_flow(database_url, kapso_timeout_seconds=1.0, **NO_CLIENT_RETRIES) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        # Kapso does the work and never answers: first the mark-read, then the reply's send.
        await flow.fault(
            kind="timeout_after_send", path="*/messages", method="POST", times=2, seconds=5
        )
        sent = await flow.say(profile.phone, "Hola")
        wamid = sent["message"]["id"]

        event = await _wait_state(flow, wamid, InboxState.DONE)
        assert event.attempts > 1
        assert [f["hits"] for f in await _faults(flow)] == [2]

        await flow.drain_deliveries()
        replies = await flow.outbox(profile.phone, wait_count=2, wait_seconds=1.5)
        assert len(replies) == 1
        assert replies[0]["request"]["context"] == {"message_id": wamid}
        (row,) = await flow.stores.outbound.list_outbound_for_inbox_event(event.id)
        assert row.status in SENT_STATES
        assert row.wamid == replies[0]["message_id"]
        # Sent once; the unknown outcome was settled from Kapso, not by sending again.
        assert row.send_attempts == 1


async def test_kapso_down_for_good_event_goes_dead_and_replays_once_fixed(
    database_url: str,
) -> None:
    async with local_flow(database_url, worker_max_attempts=2, **NO_CLIENT_RETRIES) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        await flow.fault(kind="status", status=503, path="*/messages", method="POST", times=None)
        sent = await flow.say(profile.phone, "Hola")
        wamid = sent["message"]["id"]

        dead = await _wait_state(flow, wamid, InboxState.DEAD)
        assert dead.attempts == 2
        assert dead.last_error

        # The operator's view: the service_role key only.
        service = {"Authorization": f"Bearer {service_role_token()}"}
        user = {"Authorization": f"Bearer {user_token(profile.id)}"}
        query = {"status": "dead", "limit": 200}
        assert (await flow.service.get(EVENTS_URL, params=query)).status_code == 401
        assert (await flow.service.get(EVENTS_URL, params=query, headers=user)).status_code == 403
        listed = await flow.service.get(EVENTS_URL, params=query, headers=service)
        assert listed.status_code == 200, listed.text
        (view,) = [item for item in listed.json()["data"] if item["id"] == str(dead.id)]
        assert view["state"] == "dead"
        assert view["last_error"] == dead.last_error
        assert view["attempts"] == 2
        assert await flow.outbox(profile.phone) == []

        replay_url = f"{EVENTS_URL}/{dead.id}/replay"
        assert (await flow.service.post(replay_url)).status_code == 401
        assert (await flow.service.post(replay_url, headers=user)).status_code == 403
        # Kapso is back; the operator replays the event.
        await flow.control.delete("/_emulator/faults")
        replayed = await flow.service.post(replay_url, headers=service)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["id"] == str(dead.id)

        done = await _wait_state(flow, wamid, InboxState.DONE)
        await flow.drain_deliveries()
        replies = await flow.outbox(profile.phone, wait_count=2, wait_seconds=1)
        assert len(replies) == 1
        assert replies[0]["request"]["context"] == {"message_id": wamid}
        (row,) = await flow.stores.outbound.list_outbound_for_inbox_event(done.id)
        assert row.status in SENT_STATES
        assert row.wamid == replies[0]["message_id"]

        again = await flow.service.post(replay_url, headers=service)
        assert again.status_code == 409, again.text
        unknown = await flow.service.post(f"{EVENTS_URL}/{uuid.uuid4()}/replay", headers=service)
        assert unknown.status_code == 404, unknown.text
        listed = await flow.service.get(EVENTS_URL, params=query, headers=service)
        assert str(dead.id) not in {item["id"] for item in listed.json()["data"]}
        assert await _received_event(flow, wamid) == done


async def test_event_dead_after_kapso_refusals_tried_every_attempt_and_keeps_kapso_error(
    database_url: str,
) -> None:
    async with local_flow(database_url, worker_max_attempts=2, **NO_CLIENT_RETRIES) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        await flow.fault(kind="status", status=503, path="*/messages", method="POST", times=None)
        sent = await flow.say(profile.phone, "Hola")
        dead = await _wait_state(flow, sent["message"]["id"], InboxState.DEAD)
        (row,) = await flow.stores.outbound.list_outbound_for_inbox_event(dead.id)
        # Each of the two attempts asked Kapso, and the operator sees why they failed.
        assert row.send_attempts == 2
        assert dead.last_error is not None
        assert "Kapso unavailable" in dead.last_error


class _NeverTheSameResponder:
    """An assistant that words its answer differently each time it is asked (as an LLM does)."""

    def __init__(self) -> None:
        self.calls = 0

    async def reply(self, request: ResponderRequest) -> str:
        self.calls += 1
        return f"Respuesta número {self.calls}."


async def test_replayed_event_whose_reply_reached_kapso_keeps_the_text_the_user_got(
    database_url: str,
) -> None:
    responder = _NeverTheSameResponder()
    async with local_flow(
        database_url,
        responder=responder,
        worker_max_attempts=1,
        kapso_timeout_seconds=1.0,
        **NO_CLIENT_RETRIES,
    ) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        # Kapso takes the reply but never answers; with one attempt allowed the event dies.
        await flow.fault(
            kind="timeout_after_send", path="*/messages", method="POST", times=2, seconds=5
        )
        sent = await flow.say(profile.phone, "Hola")
        wamid = sent["message"]["id"]
        dead = await _wait_state(flow, wamid, InboxState.DEAD)
        (got,) = await flow.outbox(profile.phone, wait_count=1)
        assert got["request"]["text"]["body"] == "Respuesta número 1."

        replay_url = f"{EVENTS_URL}/{dead.id}/replay"
        headers = {"Authorization": f"Bearer {service_role_token()}"}
        assert (await flow.service.post(replay_url, headers=headers)).status_code == 200
        done = await _wait_state(flow, wamid, InboxState.DONE)
        await flow.drain_deliveries()

        # Not sent again (the unknown send was found in Kapso's history)...
        assert len(await flow.outbox(profile.phone, wait_count=2, wait_seconds=1)) == 1
        (row,) = await flow.stores.outbound.list_outbound_for_inbox_event(done.id)
        assert row.wamid == got["message_id"]
        # ...and what is stored is what the user got, not a fresh answer never sent.
        conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
            sent["conversation_id"]
        )
        assert conversation is not None
        messages = await flow.stores.conversations.list_messages(conversation.id)
        replies = [m for m in messages if m.role is MessageRole.ASSISTANT]
        assert [(m.content, m.metadata.whatsapp_message_id) for m in replies] == [
            ("Respuesta número 1.", got["message_id"])
        ]


class _LongResponder:
    """An answer over WhatsApp's 4096 characters: it goes out as two messages."""

    async def reply(self, request: ResponderRequest) -> str:
        return ("Primera parte. " * 200).strip() + "\n\n" + ("Segunda parte. " * 200).strip()


async def test_a_reply_in_two_parts_goes_out_whole_after_a_failed_first_part(
    database_url: str,
) -> None:
    async with local_flow(database_url, responder=_LongResponder(), **NO_CLIENT_RETRIES) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        # Two refusals: the mark-as-read (best effort) and the first part's send.
        await flow.fault(kind="status", status=503, path="*/messages", method="POST", times=2)
        sent = await flow.say(profile.phone, "Hola")

        replies = await flow.outbox(profile.phone, wait_count=2, wait_seconds=20)
        bodies = [reply["request"]["text"]["body"] for reply in replies]
        assert [body.split(".")[0] for body in bodies] == ["Primera parte", "Segunda parte"]
        assert all(len(body) <= 4096 for body in bodies)

        async def done() -> InboxEvent | None:
            [event] = await find_inbox_events(flow.stores.inbox, wamid=sent["message"]["id"])
            return event if event.state is InboxState.DONE else None

        await eventually(done, within=20)
        await flow.drain_deliveries()
        assert len(await flow.outbox(profile.phone, wait_count=3, wait_seconds=1)) == 2


class _FailingResponder:
    """An assistant that is down: every answer fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def reply(self, request: ResponderRequest) -> str:
        self.calls += 1
        raise RuntimeError("the assistant is down")


async def test_a_failing_responder_never_loses_the_users_message(database_url: str) -> None:
    """The message is normally stored with the reply's record; when no reply can be decided
    it is stored anyway, once, while the event retries and then waits, dead, for a replay."""
    responder = _FailingResponder()
    async with local_flow(
        database_url, responder=responder, worker_max_attempts=2, worker_retry_base_seconds=0.05
    ) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        sent = await flow.say(profile.phone, "¿Cuánto IVA debo?")
        dead = await _wait_state(flow, sent["message"]["id"], InboxState.DEAD)
        assert responder.calls == 2
        assert dead.last_error is not None
        assert "the assistant is down" in dead.last_error

        conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
            sent["conversation_id"]
        )
        assert conversation is not None
        messages = await flow.stores.conversations.list_messages(conversation.id)
        assert [(m.role, m.content) for m in messages] == [(MessageRole.USER, "¿Cuánto IVA debo?")]
        assert await flow.stores.outbound.list_outbound_for_inbox_event(dead.id) == []
        assert await flow.outbox(profile.phone, wait_count=1, wait_seconds=0.5) == []


class _DiesOnceResponder:
    """The first answer never finishes (its task dies, as in a crash or a hard stop); the
    second sees whether the user's message was stored before it was asked."""

    def __init__(self, flow_conversations: list[ConversationStore]) -> None:
        self.conversations = flow_conversations
        self.stored_when_asked: list[bool] = []

    async def reply(self, request: ResponderRequest) -> str:
        conversations = self.conversations[0]
        messages = await conversations.list_messages(request.conversation_id)
        self.stored_when_asked.append(
            any(m.role is MessageRole.USER and m.content == request.text for m in messages)
        )
        if len(self.stored_when_asked) == 1:
            raise asyncio.CancelledError  # the event's task ends without a trace in the store
        return "Listo."


async def test_a_retry_stores_the_users_message_before_asking_again(database_url: str) -> None:
    holder: list[ConversationStore] = []
    responder = _DiesOnceResponder(holder)
    async with local_flow(database_url, responder=responder, worker_lease_seconds=1.5) as flow:
        holder.append(flow.stores.conversations)
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        sent = await flow.say(profile.phone, "Hola")
        done = await _wait_state(flow, sent["message"]["id"], InboxState.DONE, within=30)
        assert done.attempts == 2  # the lease ran out and the event was claimed again
        # First ask: not stored yet (it is stored with the reply); the retry stored it first.
        assert responder.stored_when_asked == [False, True]
        (reply,) = await flow.outbox(profile.phone, wait_count=1)
        assert reply["request"]["text"]["body"] == "Listo."
        conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
            sent["conversation_id"]
        )
        assert conversation is not None
        messages = await flow.stores.conversations.list_messages(conversation.id)
        assert [(m.role, m.content) for m in messages] == [
            (MessageRole.USER, "Hola"),
            (MessageRole.ASSISTANT, "Listo."),
        ]
