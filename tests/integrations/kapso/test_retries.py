"""Retries happen in one place: reads retry broadly, sends only when surely not sent."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.integrations.kapso import (
    KapsoClient,
    KapsoConnectionError,
    KapsoRateLimitError,
    KapsoServerError,
    KapsoTimeoutError,
)
from app.integrations.kapso.api.base import RetryPolicy
from support.kapso_http import PHONE_NUMBER_ID, PLATFORM, PROXY, SleepRecorder, sent_response

SEND_URL = f"{PROXY}/{PHONE_NUMBER_ID}/messages"
CONVERSATIONS = f"{PLATFORM}/whatsapp/conversations"
OK_PAGE = httpx.Response(200, json={"data": []})
IN_FLIGHT = {
    "error": "Another message is already in-flight for this conversation. Please retry shortly."
}


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.ReadTimeout("slow read"),
        httpx.RemoteProtocolError("dropped"),
        httpx.Response(408),
        httpx.Response(409, json={"error": "conflict"}),
        httpx.Response(429, json={"error": "Rate limit exceeded"}),
        httpx.Response(500),
        httpx.Response(502, json={"error": "Bad gateway"}),
        httpx.Response(503),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else str(f.status_code),
)
async def test_reads_retry_then_succeed(
    kapso: KapsoClient,
    kapso_mock: respx.MockRouter,
    sleeps: SleepRecorder,
    failure: Exception | httpx.Response,
) -> None:
    route = kapso_mock.get(CONVERSATIONS).mock(side_effect=[failure, failure, OK_PAGE])
    page = await kapso.conversations.list()
    assert page.data == []
    assert route.call_count == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_reads_do_not_retry_client_errors(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, status: int
) -> None:
    route = kapso_mock.get(CONVERSATIONS).mock(
        return_value=httpx.Response(status, json={"error": "no"})
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 - the mapping is tested elsewhere
        await kapso.conversations.list()
    assert route.call_count == 1


async def test_reads_give_up_after_max_retries(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    route = kapso_mock.get(CONVERSATIONS).mock(return_value=httpx.Response(503))
    with pytest.raises(KapsoServerError):
        await kapso.conversations.list()
    assert route.call_count == 4  # one attempt + three retries
    assert len(sleeps.delays) == 3


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {policy.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.PoolTimeout("pool exhausted"),
        httpx.Response(429, json={"error": "Rate limit exceeded"}),
        httpx.Response(409, json=IN_FLIGHT),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else str(f.status_code),
)
async def test_sends_retry_only_when_surely_not_sent(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, failure: Exception | httpx.Response
) -> None:
    route = kapso_mock.post(SEND_URL).mock(
        side_effect=[failure, httpx.Response(200, json=sent_response("wamid.OK"))]
    )
    result = await kapso.messages.send_text(message="Hola", to="56912345678")
    assert result.wamid == "wamid.OK"
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.ReadTimeout("slow read"), KapsoTimeoutError),
        (httpx.WriteTimeout("slow write"), KapsoTimeoutError),
        (httpx.RemoteProtocolError("dropped after sending"), KapsoConnectionError),
        (httpx.ReadError("reset"), KapsoConnectionError),
    ],
)
async def test_sends_never_repeat_when_outcome_unknown(
    kapso: KapsoClient,
    kapso_mock: respx.MockRouter,
    failure: Exception,
    error: type[KapsoConnectionError],
) -> None:
    route = kapso_mock.post(SEND_URL).mock(side_effect=failure)
    with pytest.raises(error) as info:
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert info.value.request_sent is True
    assert route.call_count == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_sends_do_not_retry_server_errors(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, status: int
) -> None:
    route = kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(status))
    with pytest.raises(Exception):  # noqa: B017, PT011
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert route.call_count == 1


async def test_send_conflict_other_than_in_flight_is_not_retried(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.post(SEND_URL).mock(
        return_value=httpx.Response(409, json={"error": "Duplicate template"})
    )
    with pytest.raises(Exception):  # noqa: B017, PT011
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert route.call_count == 1


async def test_retry_after_is_honoured(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    kapso_mock.post(SEND_URL).mock(
        side_effect=[
            httpx.Response(
                429, headers={"Retry-After": "7"}, json={"error": "Rate limit exceeded"}
            ),
            httpx.Response(200, json=sent_response()),
        ]
    )
    await kapso.messages.send_text(message="Hola", to="56912345678")
    assert sleeps.delays == [7.0]


async def test_retry_after_beyond_cap_reaches_the_caller(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    route = kapso_mock.post(SEND_URL).mock(
        return_value=httpx.Response(
            429, headers={"Retry-After": "60"}, json={"error": "Rate limit exceeded"}
        )
    )
    with pytest.raises(KapsoRateLimitError) as info:
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert info.value.retry_after == 60.0
    assert route.call_count == 1
    assert sleeps.delays == []


async def test_send_retries_are_bounded(kapso: KapsoClient, kapso_mock: respx.MockRouter) -> None:
    route = kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(409, json=IN_FLIGHT))
    with pytest.raises(Exception):  # noqa: B017, PT011
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert route.call_count == 4


async def test_rate_limit_headers_are_remembered(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    assert kapso.rate_limit_remaining is None
    kapso_mock.get(CONVERSATIONS).mock(
        return_value=httpx.Response(
            200,
            headers={"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "998"},
            json={"data": []},
        )
    )
    await kapso.conversations.list()
    assert kapso.rate_limit_remaining == 998
    assert kapso.rate_limit is not None
    assert kapso.rate_limit.limit == 1000


async def test_zero_retries_configured(kapso_mock: respx.MockRouter) -> None:
    route = kapso_mock.get("https://k.test/platform/v1/whatsapp/conversations").mock(
        return_value=httpx.Response(503)
    )
    async with KapsoClient(api_token="k", base_url="https://k.test", max_retries=0) as client:
        with pytest.raises(KapsoServerError):
            await client.conversations.list()
    assert route.call_count == 1
