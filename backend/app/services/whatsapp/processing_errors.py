"""How an event's processing failed: worth retrying, or never going to work."""

from __future__ import annotations


class EventProcessingError(Exception):
    """Base of failures the inbox worker understands."""


class RetryableEventError(EventProcessingError):
    """Try again later: not sooner than `retry_after` seconds, nor than the worker's backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEventError(EventProcessingError):
    """Retrying cannot help (e.g. a payload we cannot read): the event goes dead at once."""
