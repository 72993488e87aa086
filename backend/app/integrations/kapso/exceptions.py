"""The Kapso client's one error hierarchy, and the one function that maps responses onto it."""

from __future__ import annotations

from typing import Any

import httpx

# Meta error codes a caller commonly acts on.
META_OUTSIDE_WINDOW = 131047
META_UNDELIVERABLE = 131026
META_THROUGHPUT_EXCEEDED = 130429
META_PAIR_RATE_LIMIT = 131056
META_INVALID_PARAMETER = 100


class KapsoError(Exception):
    """Base of everything the Kapso client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KapsoConfigurationError(KapsoError):
    """The client was asked to do something its configuration cannot (e.g. no WABA id)."""


class KapsoRequestValidationError(KapsoError, ValueError):
    """A request broke a WhatsApp limit; raised before anything is sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class KapsoAPIError(KapsoError):
    """Kapso answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        code: int | str | None = None,
        error_subcode: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.error_subcode = error_subcode
        self.body = body
        self.retry_after = retry_after

    @property
    def meta_code(self) -> int | None:
        """Meta's numeric error code (e.g. 131047), when the error came from WhatsApp."""
        return self.code if isinstance(self.code, int) else None

    @property
    def is_outside_window(self) -> bool:
        """The 24-hour customer-service window is closed: only a template may be sent."""
        return self.code == META_OUTSIDE_WINDOW

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        return " ".join(parts)


class KapsoConnectionError(KapsoAPIError):
    """The request could not be completed at the transport level."""

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        # False only when we know the request never reached Kapso (safe to re-send).
        self.request_sent = request_sent


class KapsoTimeoutError(KapsoConnectionError):
    """Kapso did not answer in time; for a send, the outcome is unknown."""


class KapsoAuthenticationError(KapsoAPIError):
    """401: the API key is missing or invalid."""


class KapsoPermissionError(KapsoAPIError):
    """403: the key may not do this (e.g. sandbox session required)."""


class KapsoNotFoundError(KapsoAPIError):
    """404: the resource does not exist."""


class KapsoConflictError(KapsoAPIError):
    """409: e.g. another message is already in flight for this conversation."""


class KapsoValidationError(KapsoAPIError):
    """400/422: Kapso or Meta rejected the request as invalid."""


class KapsoPaymentRequiredError(KapsoAPIError):
    """402: the project has run out of credits."""


class KapsoRateLimitError(KapsoAPIError):
    """429, or Meta's throughput/pair-rate codes."""


class KapsoServerError(KapsoAPIError):
    """5xx from Kapso or Meta."""


_BY_STATUS: dict[int, type[KapsoAPIError]] = {
    400: KapsoValidationError,
    401: KapsoAuthenticationError,
    402: KapsoPaymentRequiredError,
    403: KapsoPermissionError,
    404: KapsoNotFoundError,
    409: KapsoConflictError,
    422: KapsoValidationError,
    429: KapsoRateLimitError,
}

_RATE_LIMIT_META_CODES = {META_THROUGHPUT_EXCEEDED, META_PAIR_RATE_LIMIT, 4, 80007}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _extract(body: Any) -> tuple[str | None, int | str | None, int | None]:
    """Message, code and subcode from any of Kapso's three error shapes."""
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    if isinstance(error, dict):
        # Graph envelope: {"error": {"message", "type", "code", "error_subcode", ...}}
        message = error.get("message")
        code = error.get("code")
        subcode = error.get("error_subcode")
        details = error.get("error_data")
        if isinstance(details, dict) and isinstance(details.get("details"), str):
            message = f"{message} ({details['details']})" if message else details["details"]
        return (
            str(message) if message is not None else None,
            code if isinstance(code, int | str) else None,
            subcode if isinstance(subcode, int) else None,
        )
    # Kapso flat error {"error": "...", "code": "..."} or Platform {"error": "..."}
    message = error if isinstance(error, str) else body.get("message")
    code = body.get("code")
    if isinstance(body.get("message"), str) and isinstance(error, str):
        message = f"{error}: {body['message']}"
    return (
        str(message) if message is not None else None,
        code if isinstance(code, int | str) else None,
        None,
    )


def error_from_response(response: httpx.Response) -> KapsoAPIError:
    """Map one error response (any status ≥ 400, any of Kapso's shapes) to its exception."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    message, code, subcode = _extract(body)
    status = response.status_code
    if message is None:
        message = f"Kapso returned HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))

    cls: type[KapsoAPIError]
    if status >= 500:
        cls = KapsoServerError
    elif isinstance(code, int) and code in _RATE_LIMIT_META_CODES:
        cls = KapsoRateLimitError
    else:
        cls = _BY_STATUS.get(status, KapsoAPIError)
    return cls(
        message,
        status,
        code=code,
        error_subcode=subcode,
        body=body,
        retry_after=retry_after,
    )


class KapsoWebhookPayloadError(KapsoError, ValueError):
    """A webhook body cannot be read: not JSON, not an object, or not shaped as Kapso sends it."""
