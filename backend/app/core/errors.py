"""The service's one error hierarchy and the one place that renders it as JSON."""

from __future__ import annotations

import logging
import re
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ErrorBody = dict[str, dict[str, str]]

logger = logging.getLogger(__name__)


class AppError(Exception):
    """An error that knows its HTTP status; raised anywhere, rendered once by the handler."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> ErrorBody:
        """The response body: `{"error": {"code", "message", "field"?}}`."""
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class AuthErrorCode(StrEnum):
    """Why a bearer token was refused (the `code` of a 401)."""

    # Error codes, not credentials: S105 mistakes `*_TOKEN = "..."` for hardcoded passwords.

    MISSING_TOKEN = "missing_token"  # noqa: S105
    MALFORMED_TOKEN = "malformed_token"  # noqa: S105
    EXPIRED_TOKEN = "expired_token"  # noqa: S105
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_AUDIENCE = "invalid_audience"
    INVALID_ISSUER = "invalid_issuer"
    INVALID_ROLE = "invalid_role"
    INVALID_CLAIMS = "invalid_claims"
    UNKNOWN_KEY = "unknown_key"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"


# RFC 6750 §3: error_description may only hold printable ASCII without `"` and `\`.
_UNSAFE_DESCRIPTION_CHARS = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


class AuthenticationError(AppError):
    """401: the request carries no usable bearer token."""

    status_code = 401

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        if code is AuthErrorCode.MISSING_TOKEN:
            # RFC 6750 §3.1: a request without credentials gets no error code, only the challenge.
            challenge = 'Bearer realm="fizko"'
        else:
            description = _UNSAFE_DESCRIPTION_CHARS.sub("", message)
            challenge = f'Bearer error="invalid_token", error_description="{description}"'
        super().__init__(message, code=code.value, headers={"WWW-Authenticate": challenge})
        self.auth_code = code


class ForbiddenError(AppError):
    """403: authenticated, but not allowed to do this."""

    status_code = 403
    code = "forbidden"


class AuthKeysUnavailableError(AppError):
    """503: the project's signing keys could not be fetched, so a token cannot be checked."""

    status_code = 503
    code = "auth_keys_unavailable"


class BadRequestError(AppError):
    """400: the request could not be read (e.g. malformed JSON)."""

    status_code = 400
    code = "bad_request"


class NotFoundError(AppError):
    """404: no such resource — or none the caller may see (no hint that it exists)."""

    status_code = 404
    code = "not_found"


class ConflictError(AppError):
    """409: the request conflicts with the current state (e.g. the 24-hour window closed)."""

    status_code = 409
    code = "conflict"


class PayloadTooLargeError(AppError):
    """413: the request body is larger than this endpoint accepts."""

    status_code = 413
    code = "payload_too_large"


class UnprocessableError(AppError):
    """422: well-formed but invalid; `field` names what is wrong."""

    status_code = 422
    code = "validation_error"


class TooManyRequestsError(AppError):
    """429: the caller sent too much; `Retry-After` says when to come back."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class UpstreamError(AppError):
    """502: Kapso failed in a way that is our configuration's fault, not the caller's."""

    status_code = 502
    code = "upstream_error"


class ServiceUnavailableError(AppError):
    """503: a dependency (Kapso, the store) is unavailable for now; retrying later may work."""

    status_code = 503
    code = "service_unavailable"


class UpstreamTimeoutError(AppError):
    """504: Kapso did not answer in time; the outcome is unknown and is settled later."""

    status_code = 504
    code = "upstream_timeout"


def _validation_field(loc: tuple[int | str, ...]) -> str | None:
    """Dotted location of an invalid input; body fields are named without the `body.` prefix."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    return ".".join(str(part) for part in parts) or None


async def _render_app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers or None)


async def _render_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        # Not a field's fault: the body could not be read at all.
        unreadable = BadRequestError(
            f"Malformed JSON body: {first.get('ctx', {}).get('error', 'invalid JSON')}",
            code="malformed_json",
        )
        return JSONResponse(unreadable.to_body(), status_code=unreadable.status_code)
    error = AppError(
        str(first.get("msg", "Invalid request")),
        code="validation_error",
        field=_validation_field(tuple(first.get("loc", ()))),
    )
    return JSONResponse(error.to_body(), status_code=422)


# Codes for the errors Starlette and FastAPI raise themselves (routing, unreadable bodies).
_HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def _render_http_error(_: Request, exc: Exception) -> JSONResponse:
    # An unknown path, a wrong method or an unreadable body: the same shape as our own errors.
    assert isinstance(exc, StarletteHTTPException)
    error = AppError(str(exc.detail), code=_HTTP_ERROR_CODES.get(exc.status_code, "http_error"))
    return JSONResponse(error.to_body(), status_code=exc.status_code, headers=exc.headers)


async def _render_unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    # The traceback is logged by the server; the caller learns nothing internal.
    logger.error("Unhandled error: %s", type(exc).__name__, exc_info=exc)
    error = AppError("Internal server error", code="internal_error")
    return JSONResponse(error.to_body(), status_code=500)


async def _render_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("Dependency unavailable: %s", type(exc).__name__)
    error = ServiceUnavailableError(
        "A service this request needs is unavailable; retry later", code="store_unavailable"
    )
    return JSONResponse(error.to_body(), status_code=503, headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI, *, unavailable: tuple[type[Exception], ...] = ()) -> None:
    """Render every error in the one shape; `unavailable` exceptions (e.g. the store being
    down) become 503 with `Retry-After`, not 500."""
    for exception_type in unavailable:
        app.add_exception_handler(exception_type, _render_unavailable)
    app.add_exception_handler(AppError, _render_app_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(StarletteHTTPException, _render_http_error)
    app.add_exception_handler(Exception, _render_unexpected_error)
