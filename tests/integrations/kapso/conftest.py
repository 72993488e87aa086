"""Fixtures for unit tests of the Kapso client: respx routes and a client that never sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from app.integrations.kapso import KapsoClient
from support.kapso_http import API_KEY, BASE, PHONE_NUMBER_ID, WABA_ID, SleepRecorder


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def kapso_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def kapso(kapso_mock: respx.MockRouter, sleeps: SleepRecorder) -> AsyncIterator[KapsoClient]:
    async with KapsoClient(
        api_token=API_KEY,
        base_url=BASE,
        legacy_base_url="https://legacy.kapso.test",
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        max_retries=3,
        sleep=sleeps,
    ) as client:
        yield client
