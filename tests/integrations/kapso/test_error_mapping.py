"""Every Kapso error shape and status maps to one exception, keeping Meta's code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from app.integrations.kapso import (
    KapsoAPIError,
    KapsoAuthenticationError,
    KapsoClient,
    KapsoConflictError,
    KapsoNotFoundError,
    KapsoPaymentRequiredError,
    KapsoPermissionError,
    KapsoRateLimitError,
    KapsoServerError,
    KapsoValidationError,
)
from app.integrations.kapso.exceptions import error_from_response
from support.kapso_http import PHONE_NUMBER_ID, PLATFORM, PROXY

SEND_URL = f"{PROXY}/{PHONE_NUMBER_ID}/messages"
IN_FLIGHT = "Another message is already in-flight for this conversation. Please retry shortly."


def graph_error(code: int, message: str = "boom", subcode: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbC",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "message"),
    [
        # Graph envelope (Meta proxy)
        (
            400,
            graph_error(131047, "Re-engagement message"),
            KapsoValidationError,
            131047,
            "Re-engagement message",
        ),
        (
            400,
            graph_error(100, "Invalid parameter", 2494102),
            KapsoValidationError,
            100,
            "Invalid parameter",
        ),
        (400, graph_error(131026, "Message undeliverable"), KapsoValidationError, 131026, None),
        (400, graph_error(130429, "Rate limit hit"), KapsoRateLimitError, 130429, None),
        (400, graph_error(131056, "Pair rate limit hit"), KapsoRateLimitError, 131056, None),
        (401, graph_error(190, "Invalid OAuth access token"), KapsoAuthenticationError, 190, None),
        (500, graph_error(1, "An unknown error occurred"), KapsoServerError, 1, None),
        # Kapso flat errors on the proxy
        (
            402,
            {
                "error": "Insufficient credits",
                "code": "insufficient_credits",
                "billing_url": "https://x",
            },
            KapsoPaymentRequiredError,
            "insufficient_credits",
            "Insufficient credits",
        ),
        (
            409,
            {"error": IN_FLIGHT},
            KapsoConflictError,
            None,
            IN_FLIGHT,
        ),
        (
            422,
            {"error": "Contact opted out", "code": "marketing_preference_stopped"},
            KapsoValidationError,
            "marketing_preference_stopped",
            None,
        ),
        (
            403,
            {"error": "Active sandbox session required to send messages"},
            KapsoPermissionError,
            None,
            None,
        ),
        (502, {"error": "Media download failed"}, KapsoServerError, None, "Media download failed"),
        # Platform API
        (
            404,
            {"error": "Conversation not found"},
            KapsoNotFoundError,
            None,
            "Conversation not found",
        ),
        (400, {"error": "Invalid pagination cursor"}, KapsoValidationError, None, None),
        (
            429,
            {"error": "Rate limit exceeded", "message": "Try again in 60 seconds"},
            KapsoRateLimitError,
            None,
            "Rate limit exceeded: Try again in 60 seconds",
        ),
    ],
)
def test_error_shapes(
    status: int, body: dict[str, Any], cls: type[KapsoAPIError], code: object, message: str | None
) -> None:
    error = error_from_response(httpx.Response(status, json=body))
    assert type(error) is cls
    assert isinstance(error, KapsoAPIError)
    assert error.status_code == status
    assert error.code == code
    assert error.body == body
    if message is not None:
        assert error.message == message


def test_graph_details_and_subcode_are_kept() -> None:
    body = graph_error(100, "Invalid parameter", 2494102)
    body["error"]["error_data"] = {"details": "Unknown media id"}
    error = error_from_response(httpx.Response(400, json=body))
    assert error.error_subcode == 2494102
    assert error.message == "Invalid parameter (Unknown media id)"
    assert error.meta_code == 100


def test_outside_window_is_recognisable() -> None:
    error = error_from_response(httpx.Response(400, json=graph_error(131047)))
    assert error.is_outside_window
    assert not error_from_response(httpx.Response(400, json=graph_error(100))).is_outside_window


def test_non_json_error_body() -> None:
    error = error_from_response(httpx.Response(503, text="<html>Bad gateway</html>"))
    assert isinstance(error, KapsoServerError)
    assert error.message == "<html>Bad gateway</html>" or "503" in error.message
    empty = error_from_response(httpx.Response(418))
    assert type(empty) is KapsoAPIError
    assert empty.message == "Kapso returned HTTP 418"


def test_retry_after_is_read() -> None:
    error = error_from_response(
        httpx.Response(429, headers={"Retry-After": "60"}, json={"error": "Rate limit exceeded"})
    )
    assert error.retry_after == 60.0


@pytest.mark.parametrize("status", [202, 204])
async def test_accepted_and_no_content_are_success(
    kapso: KapsoClient, kapso_mock: respx.MockRouter, status: int
) -> None:
    kapso_mock.delete(f"{PLATFORM}/whatsapp/contacts/c-1").mock(return_value=httpx.Response(status))
    await kapso.contacts.delete("c-1")  # no exception


async def test_send_error_reaches_caller_with_meta_code(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    route = kapso_mock.post(SEND_URL).mock(
        return_value=httpx.Response(400, json=graph_error(131047, "Re-engagement message"))
    )
    with pytest.raises(KapsoValidationError) as info:
        await kapso.messages.send_text(message="Hola", to="56912345678")
    assert info.value.is_outside_window
    assert route.call_count == 1


async def test_unexpected_success_shape_is_an_api_error(
    kapso: KapsoClient, kapso_mock: respx.MockRouter
) -> None:
    kapso_mock.post(SEND_URL).mock(return_value=httpx.Response(200, json={"messages": []}))
    with pytest.raises(KapsoAPIError, match="unexpected SendResponse"):
        await kapso.messages.send_text(message="Hola", to="56912345678")
