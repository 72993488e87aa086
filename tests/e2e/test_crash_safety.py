"""Crash safety end to end: a worker process killed (SIGKILL) while it holds events, and a store
outage while Kapso delivers a webhook. Nothing is lost and no reply is sent twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.repositories.models import InboxEvent, InboxState, MessageRole, OutboundStatus
from support.e2e import (
    LocalFlow,
    SqliteWriteLock,
    StoreChoice,
    TcpProxy,
    WorkerProcess,
    eventually,
    find_inbox_events,
    local_flow,
    worker_process,
)
from support.store_data import make_member

pytestmark = pytest.mark.timeout(180)

RECEIVED = "whatsapp.message.received"
SENT_STATES = {OutboundStatus.SENT, OutboundStatus.DELIVERED, OutboundStatus.READ}

# Short leases so a dead worker's events come back fast; a settle window longer than the
# injected Kapso latency, so a send still on its way is looked up, not repeated.
LEASE_SECONDS = 2.0
KAPSO_LATENCY_SECONDS = 2.5
SETTLE_SECONDS = 3.5
CRASH_SETTINGS: dict[str, Any] = {
    "worker_enabled": False,
    "worker_lease_seconds": LEASE_SECONDS,
    "worker_settle_seconds": SETTLE_SECONDS,
    "worker_max_attempts": 10,
    "worker_poll_seconds": 0.1,
    # Marking read shares the send's path (`*/messages`): no client retries keeps the faults
    # aimed at one request each.
    "kapso_max_retries": 0,
    "kapso_timeout_seconds": 5.0,
}


async def _received(flow: LocalFlow, wamids: list[str]) -> list[InboxEvent]:
    rows = await find_inbox_events(flow.repository, event=RECEIVED)
    return [row for row in rows if row.wamid in wamids]


async def _conversation_events(flow: LocalFlow, conversation_ids: set[str]) -> list[InboxEvent]:
    rows = await find_inbox_events(flow.repository)
    return [row for row in rows if row.conversation_key in conversation_ids]


def _log_tail(worker: WorkerProcess, lines: int = 40) -> str:
    return "\n".join(worker.log().splitlines()[-lines:])


@pytest.mark.parametrize(
    "in_flight",
    [
        # The reply's request is on the wire when the worker dies; it never reaches Kapso.
        pytest.param({"kind": "latency", "seconds": KAPSO_LATENCY_SECONDS}, id="send-lost"),
        # Kapso accepted the reply, but the worker died before it learned the wamid.
        pytest.param({"kind": "timeout_after_send", "seconds": 30}, id="send-accepted"),
    ],
)
async def test_killed_worker_gives_its_events_back_and_no_reply_is_sent_twice(
    store: StoreChoice, tmp_path: Path, in_flight: dict[str, Any]
) -> None:
    async with local_flow(store, **CRASH_SETTINGS) as flow:
        members = [await make_member(flow.repository) for _ in range(3)]
        phones = [profile.phone for profile, _ in members if profile.phone]
        await flow.fault(path="*/messages", method="POST", times=None, **in_flight)
        said = [await flow.say(phone, f"Hola {n}") for n in (1, 2) for phone in phones]
        wamids = [s["message"]["id"] for s in said]
        conversations = {s["conversation_id"] for s in said}
        assert len(conversations) == 3
        first_wamids = wamids[:3]

        async def recorded() -> bool:
            return len(await _received(flow, wamids)) == 6

        # All recorded before the worker starts: it claims the three first messages at once,
        # so their replies are in flight together.
        await eventually(recorded, within=20)

        async with worker_process(flow.settings, tmp_path, name="first") as first:

            async def replies_in_flight() -> list[InboxEvent]:
                """The first message of each conversation leased, its reply sent, unsettled."""
                events = await _received(flow, first_wamids)
                assert len(events) == 3
                assert {event.state for event in events} == {InboxState.PROCESSING}
                for event in events:
                    rows = await flow.repository.list_outbound_for_inbox_event(event.id)
                    assert rows, "reply not recorded yet"
                    assert all(row.send_attempts == 1 for row in rows)
                return events

            held = await eventually(replies_in_flight, within=30, interval=0.03)
            await first.kill()

        await flow.control.delete("/_emulator/faults")
        # The second message of each conversation waits behind the first (arrival order).
        waiting = await _received(flow, wamids[3:])
        assert {event.state for event in waiting} == {InboxState.PENDING}
        for event in held:
            current = await flow.repository.get_inbox_event(event.id)
            assert current is not None
            assert current.state is InboxState.PROCESSING
            assert current.lease_owner == event.lease_owner
            for row in await flow.repository.list_outbound_for_inbox_event(event.id):
                assert row.status is OutboundStatus.PENDING
                assert row.wamid is None
        if in_flight["kind"] == "timeout_after_send":
            # Kapso has the three replies; the dead worker never learned their wamids.
            assert len(await flow.outbox(wait_count=3, wait_seconds=1)) == 3
        else:
            # The requests died with the worker: Kapso never records them, even once the
            # injected latency is over.
            assert await flow.outbox(wait_count=1, wait_seconds=KAPSO_LATENCY_SECONDS + 0.5) == []

        async with worker_process(flow.settings, tmp_path, name="second") as second:

            async def all_done() -> bool:
                events = await _received(flow, wamids)
                assert len(events) == 6
                assert not [e for e in events if e.state is InboxState.DEAD], _log_tail(second)
                return all(event.state is InboxState.DONE for event in events)

            await eventually(all_done, within=60, interval=0.1)
            await flow.drain_deliveries()

            async def conversations_done() -> bool:
                events = await _conversation_events(flow, conversations)
                return all(event.state is InboxState.DONE for event in events)

            await eventually(conversations_done, within=30, interval=0.1)
            assert await second.terminate() == 0, _log_tail(second)

        # Every event ends done; the killed ones were leased again (lease expiry gave them back).
        events = {event.wamid: event for event in await _received(flow, wamids)}
        for event in held:
            assert events[event.wamid].attempts >= 2
            assert events[event.wamid].lease_owner is None
        # Exactly one reply per inbound message, each answering its own message.
        outbox = await flow.outbox(wait_count=7, wait_seconds=1)
        assert len(outbox) == 6, outbox
        replied_to = sorted(entry["request"]["context"]["message_id"] for entry in outbox)
        assert replied_to == sorted(wamids)
        wamid_of_reply = {entry["request"]["context"]["message_id"]: entry for entry in outbox}
        for wamid in wamids:
            rows = await flow.repository.list_outbound_for_inbox_event(events[wamid].id)
            assert len(rows) == 1
            assert rows[0].status in SENT_STATES
            assert rows[0].wamid == wamid_of_reply[wamid]["message_id"]
            if in_flight["kind"] == "timeout_after_send" and wamid in first_wamids:
                # Settled from Kapso's history: the second worker did not send it again.
                assert rows[0].send_attempts == 1
        # Every user message stored exactly once, with its one reply.
        for phone in phones:
            mine = [s for s in said if s["message"]["kapso"]["phone_number"] == phone]
            conversation = await flow.repository.find_conversation_by_kapso_id(
                mine[0]["conversation_id"]
            )
            assert conversation is not None
            messages = await flow.repository.list_messages(conversation.id)
            user = [m.metadata.whatsapp_message_id for m in messages if m.role is MessageRole.USER]
            assert user == [s["message"]["id"] for s in mine]
            replies = [m for m in messages if m.role is MessageRole.ASSISTANT]
            assert sorted(m.metadata.whatsapp_message_id or "" for m in replies) == sorted(
                entry["message_id"] for entry in outbox if entry["to"] == phone.lstrip("+")
            )


# --- A store outage while Kapso delivers -----------------------------------------------------


class _Outage:
    """Makes the service's store fail, and recover, without harming the shared stack."""

    def __init__(self, store: StoreChoice) -> None:
        self.store = store
        self.settings: dict[str, Any] = {}
        self._proxy: TcpProxy | None = None
        self._lock: SqliteWriteLock | None = None

    async def __aenter__(self) -> _Outage:
        if self.store.supabase is not None:
            # The service reaches the stack through a proxy this test can cut.
            self._proxy = TcpProxy(self.store.supabase.url)
            self.settings = {"supabase_url": await self._proxy.start()}
        else:
            assert self.store.sqlite_path is not None
            self._lock = SqliteWriteLock(self.store.sqlite_path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end()
        if self._proxy is not None:
            await self._proxy.aclose()

    async def begin(self) -> None:
        if self._proxy is not None:
            self._proxy.cut()
        if self._lock is not None:
            # Another process holds the write lock: inserts wait out the busy timeout, then fail.
            await self._lock.acquire()

    async def end(self) -> None:
        if self._proxy is not None:
            self._proxy.restore()
        if self._lock is not None:
            await self._lock.release()


async def _delivery_of(flow: LocalFlow, wamid: str) -> dict[str, Any]:
    """The emulator's one delivery of the message `wamid` (with its attempts)."""
    response = await flow.control.get("/_emulator/deliveries", params={"event": RECEIVED})
    found = [d for d in response.json()["data"] if wamid in d["body"]]
    assert len(found) == 1
    delivery: dict[str, Any] = found[0]
    return delivery


async def test_store_outage_at_ingest_answers_503_and_kapso_retry_is_answered_once(
    store: StoreChoice, tmp_path: Path
) -> None:
    async with (
        _Outage(store) as outage,
        # The API process only records; a worker process (with its own store connection)
        # processes, so the outage is what the webhook request meets, nothing queued before it.
        local_flow(
            store, worker_enabled=False, store_timeout_seconds=2.0, **outage.settings
        ) as flow,
        worker_process(flow.settings, tmp_path) as worker,
    ):
        profile, _ = await make_member(flow.repository)
        assert profile.phone is not None
        # The conversation exists before the outage: only the message's delivery is refused.
        first = await flow.say(profile.phone, "Hola")
        assert len(await flow.outbox(profile.phone, wait_count=1, wait_seconds=20)) == 1
        await flow.drain_deliveries()

        async def idle() -> bool:
            events = await find_inbox_events(flow.repository)
            mine = [e for e in events if e.conversation_key == first["conversation_id"]]
            return all(event.state is InboxState.DONE for event in mine)

        await eventually(idle, within=20)
        # Kapso waits long enough to see the answer, and retries after 1.5 s (scaled).
        await flow.configure_emulator(
            webhook_timeout_seconds=6000, retry_schedule_seconds=[150, 150, 150, 150]
        )

        await outage.begin()
        sent = await flow.say(profile.phone, "¿Están ahí?")
        wamid = sent["message"]["id"]

        async def refused() -> dict[str, Any]:
            delivery = await _delivery_of(flow, wamid)
            assert delivery["attempts"], "not answered yet"
            return delivery

        delivery = await eventually(refused, within=40, interval=0.1)
        assert {attempt["status_code"] for attempt in delivery["attempts"]} == {503}
        assert delivery["state"] == "retrying"
        # Nothing was recorded: the 503 told Kapso the truth.
        assert await find_inbox_events(flow.repository, wamid=wamid) == []
        await outage.end()

        # Kapso's retry is recorded, processed and answered once.
        replies = await flow.outbox(profile.phone, wait_count=2, wait_seconds=30)
        assert len(replies) == 2, worker.log()[-3000:]
        assert replies[1]["request"]["context"] == {"message_id": wamid}

        async def delivered() -> dict[str, Any]:
            delivery = await _delivery_of(flow, wamid)
            assert delivery["state"] == "delivered"
            return delivery

        delivery = await eventually(delivered, within=10)
        statuses = [attempt["status_code"] for attempt in delivery["attempts"]]
        assert statuses[0] == 503
        assert statuses[-1] == 200
        (event,) = await find_inbox_events(flow.repository, wamid=wamid, event=RECEIVED)
        await flow.drain_deliveries()
        assert len(await flow.outbox(profile.phone, wait_count=3, wait_seconds=1)) == 2
        current = await flow.repository.get_inbox_event(event.id)
        assert current is not None
        assert current.state is InboxState.DONE
