"""Walking Kapso's cursor-paginated lists page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from app.integrations.kapso.models import CursorPage

T = TypeVar("T")

MAX_PAGE_SIZE = 100


async def iterate_pages(
    fetch: Callable[[str | None], Awaitable[CursorPage[T]]],
) -> AsyncIterator[T]:
    """Yield every item of every page; `fetch(after)` returns the page after a cursor."""
    cursor: str | None = None
    seen_cursors: set[str] = set()
    while True:
        page = await fetch(cursor)
        for item in page.data:
            yield item
        cursor = page.next_cursor
        # A cursor seen before would loop forever: stop rather than trust it.
        if not page.data or cursor is None or cursor in seen_cursors:
            return
        seen_cursors.add(cursor)


def iso(value: datetime | None) -> str | None:
    """Query-string form of a datetime filter (ISO 8601)."""
    return value.isoformat() if value is not None else None
