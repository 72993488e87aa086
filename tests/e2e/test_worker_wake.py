"""A worker process wakes when another process records events (LISTEN/NOTIFY), not at its next
poll: the API process records a webhook and a `whatsapp-worker` process that polls only every
30 s answers it within 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.repositories.models import InboxState
from support.e2e import LocalFlow, eventually, find_inbox_events, local_flow, worker_process
from support.store_data import make_member

pytestmark = pytest.mark.timeout(120)

RECEIVED = "whatsapp.message.received"
POLL_SECONDS = 30.0
WAKE_WITHIN_SECONDS = 2.0


async def _idle(flow: LocalFlow) -> None:
    """Every webhook delivered (the replies' statuses too) and every inbox event done: the
    worker has nothing left and waits for its next poll, POLL_SECONDS away."""
    await flow.drain_deliveries()

    async def all_done() -> bool:
        events = await find_inbox_events(flow.stores.inbox)
        assert events
        return all(event.state is InboxState.DONE for event in events)

    await eventually(all_done, within=20, interval=0.05)


async def test_a_worker_process_wakes_when_the_api_process_records_a_webhook(
    database_url: str, tmp_path: Path
) -> None:
    async with local_flow(database_url, worker_enabled=False) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        phone = profile.phone
        async with worker_process(
            flow.settings, tmp_path, worker_poll_seconds=POLL_SECONDS
        ) as worker:
            await worker.started()
            # The first message may be answered by the worker's start-up claims; it proves the
            # pair works, not how the worker learnt of it.
            await flow.say(phone, "Hola")
            assert len(await flow.outbox(phone, wait_count=1, wait_seconds=30)) == 1, worker.log()
            await _idle(flow)

            for n in (2, 3):
                sent_at = time.monotonic()
                said = await flow.say(phone, f"Mensaje {n}")
                replies = await flow.outbox(
                    phone, wait_count=n, wait_seconds=WAKE_WITHIN_SECONDS + 1
                )
                took = time.monotonic() - sent_at
                assert len(replies) == n, worker.log()
                assert replies[-1]["request"]["context"] == {"message_id": said["message"]["id"]}
                # Polling cannot explain it: the worker's next poll is about 30 s away.
                assert took < WAKE_WITHIN_SECONDS, f"answered after {took:.2f} s"
                await _idle(flow)
            assert await worker.terminate() == 0, worker.log()
