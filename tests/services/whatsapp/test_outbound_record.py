"""`OutboundSender.record`: the reply parts recorded in the caller's transaction, the first
new one with its attempt counted there (no transaction of its own before it is sent)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast
from uuid import uuid4

import pytest

from app.repositories.stores import Stores
from app.services.whatsapp.outbound import PURPOSE_REPLY, OutboundSender, OutboundText


class StepInterruptedError(Exception):
    """A failure after the parts were recorded, before the transaction ended."""


def part(key: str, text: str) -> OutboundText:
    return OutboundText(
        idempotency_key=key,
        content=text,
        purpose=PURPOSE_REPLY,
        to_phone="+56912345678",
        business_phone_number_id="pn-1",
    )


def sender(stores: Stores) -> OutboundSender:
    # Recording never calls Kapso.
    return OutboundSender(stores, cast(Any, None), settle_after=timedelta(seconds=20))


async def test_the_first_new_part_is_begun_in_the_recording_transaction(stores: Stores) -> None:
    key = uuid4().hex
    parts = [part(f"{key}:1/2", "uno"), part(f"{key}:2/2", "dos")]
    async with stores.database.transaction() as tx:
        first, second = await sender(stores).record(parts, tx=tx)
    assert first.attempt_begun is True
    assert first.row.send_attempts == 1
    assert first.row.last_attempt_at is not None
    assert second.attempt_begun is False
    assert second.row.send_attempts == 0
    assert await stores.outbound.get_outbound(first.row.id) == first.row
    assert [d.message for d in (first, second)] == parts

    # Again (a retry of the event): the same rows, nothing begun, nothing counted.
    async with stores.database.transaction() as tx:
        again = await sender(stores).record(parts, tx=tx)
    assert [d.row for d in again] == [first.row, second.row]
    assert not any(d.attempt_begun for d in again)

    # A part new to this call after one recorded earlier is the one begun.
    more = [*parts, part(f"{key}:3/3", "tres")]
    async with stores.database.transaction() as tx:
        third = (await sender(stores).record(more, tx=tx))[2]
    assert third.attempt_begun is True
    assert third.row.send_attempts == 1


async def test_nothing_is_recorded_when_the_transaction_fails(stores: Stores) -> None:
    key = uuid4().hex

    async def step() -> None:
        async with stores.database.transaction() as tx:
            await sender(stores).record([part(f"{key}:1", "uno")], tx=tx)
            raise StepInterruptedError

    with pytest.raises(StepInterruptedError):
        await step()
    assert await stores.outbound.find_outbound_by_idempotency_key(f"{key}:1", user_id=None) is None
