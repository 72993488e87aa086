"""A per-caller sliding-window limit on sends (per process)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from app.core.errors import TooManyRequestsError

# Callers remembered at most; the least recently seen are forgotten first (bounded memory).
MAX_TRACKED_CALLERS = 10_000


class SendRateLimiter:
    """At most `limit` sends per `window_seconds` for each caller."""

    def __init__(
        self,
        limit: int,
        window_seconds: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, caller: str) -> None:
        """Count one send for `caller`, or raise 429 with how long to wait."""
        now = self._clock()
        hits = self._hits.pop(caller, None) or deque()
        while hits and now - hits[0] >= self._window:
            hits.popleft()
        self._hits[caller] = hits
        while len(self._hits) > MAX_TRACKED_CALLERS:
            self._hits.popitem(last=False)
        if len(hits) >= self._limit:
            retry_after = self._window - (now - hits[0])
            raise TooManyRequestsError(
                f"Too many sends: at most {self._limit} per {int(self._window)} seconds",
                retry_after=retry_after,
            )
        hits.append(now)
