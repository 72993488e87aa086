"""How an event's processing failed: worth retrying, or never going to work."""

from __future__ import annotations


class EventProcessingError(Exception):
    """Base of failures the inbox worker understands."""


class RetryableEventError(EventProcessingError):
    """Try again later; `retry_after` (seconds) overrides the worker's backoff when set."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEventError(EventProcessingError):
    """Retrying cannot help (e.g. a payload we cannot read): the event goes dead at once."""
