"""Crash safety end to end: worker processes killed (SIGKILL) while they hold events, and a
database outage while Kapso delivers a webhook. Nothing is lost and no reply is sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from app.repositories.models import InboxEvent, InboxState, MessageRole, OutboundStatus
from support.e2e import (
    LocalFlow,
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


async def _received(flow: LocalFlow, wamids: list[str], *, scan: int = 200) -> list[InboxEvent]:
    rows = await find_inbox_events(flow.stores.inbox, event=RECEIVED, scan=scan)
    return [row for row in rows if row.wamid in wamids]


async def _conversation_events(
    flow: LocalFlow, conversation_ids: set[str], *, scan: int = 200
) -> list[InboxEvent]:
    rows = await find_inbox_events(flow.stores.inbox, scan=scan)
    return [row for row in rows if row.conversation_key in conversation_ids]


async def _faults(flow: LocalFlow) -> list[dict[str, Any]]:
    response = await flow.control.get("/_emulator/faults")
    data: list[dict[str, Any]] = response.json()["data"]
    return data


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
    database_url: str, tmp_path: Path, in_flight: dict[str, Any]
) -> None:
    async with local_flow(database_url, **CRASH_SETTINGS) as flow:
        members = [await make_member(flow.seeder) for _ in range(3)]
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
                    rows = await flow.stores.outbound.list_outbound_for_inbox_event(event.id)
                    assert rows, "reply not recorded yet"
                    assert all(row.send_attempts == 1 for row in rows)
                # The attempt is counted when the reply is recorded, just before the request
                # leaves: wait until Kapso has the three requests (each message's mark-read,
                # then its reply, both POST */messages), or the kill could come first.
                (fault,) = await _faults(flow)
                assert fault["hits"] == 6, fault
                if in_flight["kind"] == "timeout_after_send":
                    assert len(await flow.outbox()) == 3, "Kapso has not taken every reply yet"
                return events

            held = await eventually(replies_in_flight, within=30, interval=0.03)
            await first.kill()

        await flow.control.delete("/_emulator/faults")
        # The second message of each conversation waits behind the first (arrival order).
        waiting = await _received(flow, wamids[3:])
        assert {event.state for event in waiting} == {InboxState.PENDING}
        for event in held:
            current = await flow.stores.inbox.get_inbox_event(event.id)
            assert current is not None
            assert current.state is InboxState.PROCESSING
            assert current.lease_owner == event.lease_owner
            for row in await flow.stores.outbound.list_outbound_for_inbox_event(event.id):
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
            rows = await flow.stores.outbound.list_outbound_for_inbox_event(events[wamid].id)
            assert len(rows) == 1
            assert rows[0].status in SENT_STATES
            assert rows[0].wamid == wamid_of_reply[wamid]["message_id"]
            if in_flight["kind"] == "timeout_after_send" and wamid in first_wamids:
                # Settled from Kapso's history: the second worker did not send it again.
                assert rows[0].send_attempts == 1
        # Every user message stored exactly once, with its one reply.
        for phone in phones:
            mine = [s for s in said if s["message"]["kapso"]["phone_number"] == phone]
            conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
                mine[0]["conversation_id"]
            )
            assert conversation is not None
            messages = await flow.stores.conversations.list_messages(conversation.id)
            user = [m.metadata.whatsapp_message_id for m in messages if m.role is MessageRole.USER]
            assert user == [s["message"]["id"] for s in mine]
            replies = [m for m in messages if m.role is MessageRole.ASSISTANT]
            assert sorted(m.metadata.whatsapp_message_id or "" for m in replies) == sorted(
                entry["message_id"] for entry in outbox if entry["to"] == phone.lstrip("+")
            )


# --- A database outage while Kapso delivers --------------------------------------------------


class _Outage:
    """Makes the service's database unreachable, and reachable again, without touching the
    server: the service (API and worker) reaches it through a proxy this test can cut, while
    the test's own pool (`flow.stores`) goes straight to it."""

    def __init__(self, database_url: str) -> None:
        self._proxy = TcpProxy(database_url)
        self.service_database_url = ""

    async def __aenter__(self) -> _Outage:
        self.service_database_url = await self._proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._proxy.aclose()

    async def begin(self) -> None:
        self._proxy.cut()

    async def end(self) -> None:
        self._proxy.restore()


async def _delivery_of(flow: LocalFlow, wamid: str) -> dict[str, Any]:
    """The emulator's one delivery of the message `wamid` (with its attempts)."""
    response = await flow.control.get("/_emulator/deliveries", params={"event": RECEIVED})
    found = [d for d in response.json()["data"] if wamid in d["body"]]
    assert len(found) == 1
    delivery: dict[str, Any] = found[0]
    return delivery


async def test_database_outage_at_ingest_answers_503_and_kapso_retry_is_answered_once(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        _Outage(database_url) as outage,
        # The API process only records; a worker process (with its own database connections)
        # processes, so the outage is what the webhook request meets, nothing queued before it.
        local_flow(
            database_url,
            service_database_url=outage.service_database_url,
            worker_enabled=False,
            store_timeout_seconds=2.0,
        ) as flow,
        worker_process(flow.settings, tmp_path) as worker,
    ):
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        # The conversation exists before the outage: only the message's delivery is refused.
        first = await flow.say(profile.phone, "Hola")
        assert len(await flow.outbox(profile.phone, wait_count=1, wait_seconds=20)) == 1
        await flow.drain_deliveries()

        async def idle() -> bool:
            events = await find_inbox_events(flow.stores.inbox)
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
        assert await find_inbox_events(flow.stores.inbox, wamid=wamid) == []
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
        (event,) = await find_inbox_events(flow.stores.inbox, wamid=wamid, event=RECEIVED)
        await flow.drain_deliveries()
        assert len(await flow.outbox(profile.phone, wait_count=3, wait_seconds=1)) == 2
        current = await flow.stores.inbox.get_inbox_event(event.id)
        assert current is not None
        assert current.state is InboxState.DONE


# --- Many workers, killed at random, on one database ------------------------------------------

USERS = 30
MESSAGES_PER_USER = 10
WORKERS = 3
MIN_KILLS = 3
CHAOS_LEASE_SECONDS = 3.0
CHAOS_SETTINGS: dict[str, Any] = {
    # One API process that only records; the work is the worker processes'.
    "worker_enabled": False,
    # A killed worker's events come back after at most this long.
    "worker_lease_seconds": CHAOS_LEASE_SECONDS,
    # An event held by several killed workers in a row must not go dead for it.
    "worker_max_attempts": 30,
    "worker_poll_seconds": 0.1,
    "worker_settle_seconds": 0.5,
}


class _WorkerSlots:
    """`WORKERS` worker processes; a killed one is replaced by a new process at once."""

    def __init__(self, flow: LocalFlow, workdir: Path, stack: contextlib.AsyncExitStack) -> None:
        self._flow = flow
        self._workdir = workdir
        self._stack = stack
        self._started = 0
        self.slots: list[WorkerProcess] = []
        self.kills = 0
        # Events a worker held (leased, unfinished) when it was killed.
        self.held_when_killed: set[UUID] = set()

    async def start(self) -> WorkerProcess:
        self._started += 1
        return await self._stack.enter_async_context(
            worker_process(self._flow.settings, self._workdir, name=f"worker-{self._started}")
        )

    async def fill(self) -> None:
        self.slots = [await self.start() for _ in range(WORKERS)]
        for worker in self.slots:
            await worker.started()

    async def leases_by_pid(self) -> dict[int, set[UUID]]:
        """Unexpired leases of events in processing, by the pid in their owner's name."""
        now = datetime.now(UTC)
        held: dict[int, set[UUID]] = {}
        for event in await self._flow.stores.inbox.list_inbox_events(
            InboxState.PROCESSING, limit=1000
        ):
            if event.lease_owner and event.lease_expires_at and event.lease_expires_at > now:
                # worker_id(): "<host>:<pid>:<random>"
                pid = int(event.lease_owner.split(":")[-2])
                held.setdefault(pid, set()).add(event.id)
        return held

    async def kill_one_holding_events(self, rng: random.Random) -> bool:
        """SIGKILL a worker that holds events right now, and start another in its place."""
        held = await self.leases_by_pid()
        busy = [
            n for n, w in enumerate(self.slots) if w.process.returncode is None and w.pid in held
        ]
        if not busy:
            return False
        n = rng.choice(busy)
        victim = self.slots[n]
        await victim.kill()
        self.kills += 1
        self.held_when_killed |= held[victim.pid]
        self.slots[n] = await self.start()
        return True

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{_log_tail(w)}" for w in self.slots)


async def _recorded(flow: LocalFlow, wamid: str) -> bool:
    """The service recorded the message `wamid` in its inbox."""
    row = await flow.stores.database.fetchrow(
        "select 1 from public.whatsapp_inbox_events where wamid = $1 and event = $2",
        wamid,
        RECEIVED,
    )
    return row is not None


async def test_three_workers_killed_at_random_store_and_answer_every_message_once_in_order(
    database_url: str, tmp_path: Path
) -> None:
    """1 API process + 3 `whatsapp-worker` processes on one database; 30 users write 10
    numbered messages each while workers are SIGKILLed (and replaced) at random moments. Every
    message is stored once and answered once, each user's in the order sent."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    scan = USERS * MESSAGES_PER_USER * 5
    async with (
        local_flow(database_url, **CHAOS_SETTINGS) as flow,
        contextlib.AsyncExitStack() as stack,
    ):
        # Users who never read: two status events per reply (sent, delivered), not three.
        await flow.configure_emulator(
            rate_limit_per_minute=100_000,
            status_delays={"sent": 0, "delivered": 0.5, "read": None},
        )
        members = [await make_member(flow.seeder) for _ in range(USERS)]
        phones = [profile.phone for profile, _ in members if profile.phone]
        assert len(phones) == USERS
        workers = _WorkerSlots(flow, tmp_path, stack)
        await workers.fill()

        sent: dict[str, list[str]] = {phone: [] for phone in phones}
        conversation_of: dict[str, str] = {}

        async def user(phone: str, pace: random.Random) -> None:
            for n in range(1, MESSAGES_PER_USER + 1):
                said = await flow.say(phone, f"Mensaje {n}")
                wamid: str = said["message"]["id"]
                sent[phone].append(wamid)
                conversation_of[phone] = said["conversation_id"]
                # "The order sent" is the order the service received them in: Kapso does not
                # promise delivery order, so the next message waits until this one is recorded.
                await eventually(partial(_recorded, flow, wamid), within=20, interval=0.05)
                await asyncio.sleep(pace.uniform(0.05, 0.25))

        load = asyncio.gather(*(user(phone, random.Random(rng.random())) for phone in phones))

        # Kill workers at random moments while they hold events (at least MIN_KILLS, as many
        # as fit in the load); each is replaced at once by a new process.
        while not load.done() or workers.kills < MIN_KILLS:
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            deadline = time.monotonic() + 5
            while not await workers.kill_one_holding_events(rng):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            if load.done() and time.monotonic() > deadline:
                break  # nothing left to interrupt
        await load
        assert workers.kills >= MIN_KILLS, f"only {workers.kills} kills (seed {seed})"

        wamids = [wamid for phone in phones for wamid in sent[phone]]
        assert len(set(wamids)) == USERS * MESSAGES_PER_USER

        async def received_done() -> bool:
            events = await _received(flow, wamids, scan=scan)
            assert len(events) == len(wamids)
            dead = [e for e in events if e.state is InboxState.DEAD]
            assert not dead, f"dead events (seed {seed}): {dead[:3]}\n{workers.logs()}"
            return all(event.state is InboxState.DONE for event in events)

        await eventually(received_done, within=45, interval=0.2)
        # The replies' status events too; then the workers stop cleanly.
        await flow.drain_deliveries()

        async def everything_done() -> bool:
            events = await _conversation_events(flow, set(conversation_of.values()), scan=scan)
            return all(event.state is InboxState.DONE for event in events)

        await eventually(everything_done, within=30, interval=0.2)
        for worker in workers.slots:
            assert await worker.terminate() == 0, workers.logs()

        events = {event.wamid: event for event in await _received(flow, wamids, scan=scan)}
        # The kills mattered: events that killed workers held were leased again.
        leased_again = {event.id for event in events.values() if event.attempts >= 2}
        assert workers.held_when_killed & leased_again, f"nothing leased again (seed {seed})"

        # Answered exactly once, each user's replies in the order of their messages.
        outbox = await flow.outbox(wait_count=len(wamids) + 1, wait_seconds=1)
        assert len(outbox) == len(wamids), f"seed {seed}"
        for phone in phones:
            mine = [entry for entry in outbox if entry["to"] == phone.lstrip("+")]
            assert [entry["request"]["context"]["message_id"] for entry in mine] == sent[phone]
            reply_wamids = [entry["message_id"] for entry in mine]
            for wamid, reply_wamid in zip(sent[phone], reply_wamids, strict=True):
                rows = await flow.stores.outbound.list_outbound_for_inbox_event(events[wamid].id)
                assert len(rows) == 1, rows
                assert rows[0].status in SENT_STATES
                assert rows[0].wamid == reply_wamid

            # Stored exactly once, in the order sent, each reply right after its message.
            conversation = await flow.stores.conversations.find_conversation_by_kapso_id(
                conversation_of[phone]
            )
            assert conversation is not None
            messages = await flow.stores.conversations.list_messages(conversation.id, limit=200)
            assert [m.role for m in messages] == [
                MessageRole.USER,
                MessageRole.ASSISTANT,
            ] * MESSAGES_PER_USER
            assert [m.metadata.whatsapp_message_id for m in messages[0::2]] == sent[phone]
            assert [m.content for m in messages[0::2]] == [
                f"Mensaje {n}" for n in range(1, MESSAGES_PER_USER + 1)
            ]
            assert [m.metadata.whatsapp_message_id for m in messages[1::2]] == reply_wamids
