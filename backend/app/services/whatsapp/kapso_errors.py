"""What a Kapso failure means for the caller of our send API (honest statuses, one place)."""

from __future__ import annotations

from app.core.errors import (
    AppError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    UnprocessableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.integrations.kapso import (
    KapsoAPIError,
    KapsoAuthenticationError,
    KapsoConfigurationError,
    KapsoConflictError,
    KapsoConnectionError,
    KapsoError,
    KapsoNotFoundError,
    KapsoPaymentRequiredError,
    KapsoPermissionError,
    KapsoRateLimitError,
    KapsoRequestValidationError,
    KapsoServerError,
    KapsoTimeoutError,
)

OUTSIDE_WINDOW_HINT = (
    "The 24-hour customer-service window is closed: only a template can be sent "
    "(POST /api/whatsapp/send/template)."
)


def app_error_from_kapso(exc: KapsoError) -> AppError:
    """Map a Kapso client error to the status our caller should see."""
    if isinstance(exc, KapsoRequestValidationError):
        return UnprocessableError(exc.message, field=exc.field)
    if isinstance(exc, KapsoConfigurationError):
        return UpstreamError(f"WhatsApp sending is misconfigured: {exc.message}")
    if not isinstance(exc, KapsoAPIError):
        return UpstreamError(exc.message)
    if exc.is_outside_window:
        return ConflictError(OUTSIDE_WINDOW_HINT, code="outside_customer_service_window")
    if isinstance(exc, KapsoTimeoutError) or (
        isinstance(exc, KapsoConnectionError) and exc.request_sent
    ):
        return UpstreamTimeoutError(
            "Kapso did not confirm the send in time; it may still be delivered. "
            "Its status is settled by Kapso's status webhooks."
        )
    if isinstance(exc, KapsoConnectionError):
        return ServiceUnavailableError("Kapso could not be reached; nothing was sent")
    if isinstance(exc, KapsoConflictError):
        # Kapso's "another message is already in flight for this conversation": transient.
        busy = ServiceUnavailableError(
            f"Kapso is busy with this conversation: {exc.message}", code="upstream_busy"
        )
        busy.headers["Retry-After"] = "2"
        return busy
    if isinstance(exc, KapsoRateLimitError):
        error = ServiceUnavailableError(
            f"Kapso is rate limiting our sends: {exc.message}", code="upstream_rate_limited"
        )
        error.headers["Retry-After"] = str(max(1, int(exc.retry_after or 60)))
        return error
    if isinstance(exc, KapsoAuthenticationError | KapsoPermissionError | KapsoPaymentRequiredError):
        return UpstreamError(
            "Kapso refused our credentials or account (check KAPSO_API_KEY and the Kapso "
            f"project): {exc.message}"
        )
    if isinstance(exc, KapsoServerError):
        return UpstreamError(f"Kapso failed: {exc.message}")
    if isinstance(exc, KapsoNotFoundError):
        return NotFoundError(f"Kapso does not know this resource: {exc.message}")
    # Kapso's or Meta's validation of this message (4xx).
    return UnprocessableError(f"Kapso rejected the message: {exc.message}", code="kapso_rejected")


_REPLAYABLE: dict[str, type[AppError]] = {
    "outside_customer_service_window": ConflictError,
    "validation_error": UnprocessableError,
    "kapso_rejected": UnprocessableError,
    "not_found": NotFoundError,
    "upstream_error": UpstreamError,
    "upstream_rate_limited": ServiceUnavailableError,
    "service_unavailable": ServiceUnavailableError,
    "upstream_busy": ServiceUnavailableError,
    "upstream_timeout": UpstreamTimeoutError,
}


def app_error_from_code(code: str | None, message: str | None) -> AppError:
    """The error a send first answered with, rebuilt from what was recorded (for replays)."""
    cls = _REPLAYABLE.get(code or "", UpstreamError)
    error = cls(message or "The first request with this Idempotency-Key failed", code=code)
    if code == "upstream_rate_limited":
        error.headers["Retry-After"] = "60"
    return error
