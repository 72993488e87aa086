"""End-to-end fixtures: the emulator and the service on a fresh PostgreSQL database, over real
HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.e2e import LocalFlow, local_flow


@pytest.fixture
async def flow(database_url: str) -> AsyncIterator[LocalFlow]:
    async with local_flow(database_url) as running:
        yield running
