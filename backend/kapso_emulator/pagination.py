"""Kapso's two pagination styles: cursors (`paging`) and offsets (`meta`)."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any, TypeVar

from starlette.datastructures import URL

from kapso_emulator.models import Record

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

RecordT = TypeVar("RecordT", bound=Record)
ItemT = TypeVar("ItemT")


class PaginationError(ValueError):
    """A bad `limit`, cursor or page; each API renders it in its own error shape."""


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        prefix, _, number = text.partition(":")
        if prefix != "seq":
            raise ValueError(cursor)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise PaginationError(f"Invalid cursor: {cursor}") from err


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError as err:
        raise PaginationError(f"Invalid limit: {raw}") from err
    if limit < 1 or limit > MAX_LIMIT:
        raise PaginationError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def cursor_page(
    items: Sequence[RecordT],
    *,
    url: URL,
    limit_raw: str | None,
    before: str | None,
    after: str | None,
) -> tuple[list[RecordT], dict[str, Any]]:
    """One page of `items` (already filtered and sorted) and its `paging` object."""
    limit = parse_limit(limit_raw)
    positions = {item.seq: index for index, item in enumerate(items)}
    if after:
        seq = decode_cursor(after)
        if seq not in positions:
            raise PaginationError(f"Invalid cursor: {after}")
        start = positions[seq] + 1
        end = start + limit
    elif before:
        seq = decode_cursor(before)
        if seq not in positions:
            raise PaginationError(f"Invalid cursor: {before}")
        end = positions[seq]
        start = max(0, end - limit)
    else:
        start, end = 0, limit
    page = list(items[start:end])
    paging: dict[str, Any] = {}
    if page:
        first, last = encode_cursor(page[0].seq), encode_cursor(page[-1].seq)
        paging["cursors"] = {"before": first, "after": last}
        base = url.remove_query_params(["after", "before"])
        if end < len(items):
            paging["next"] = str(base.include_query_params(after=last, limit=limit))
        if start > 0:
            paging["previous"] = str(base.include_query_params(before=first, limit=limit))
    else:
        paging["cursors"] = {"before": None, "after": None}
    return page, paging


def offset_page(
    items: Sequence[ItemT], *, page_raw: str | None, per_page_raw: str | None
) -> tuple[list[ItemT], dict[str, int]]:
    """One page of `items` and its `meta` object (`page`, `per_page`, totals)."""
    try:
        page = int(page_raw) if page_raw else 1
        per_page = int(per_page_raw) if per_page_raw else DEFAULT_LIMIT
    except ValueError as err:
        raise PaginationError("page and per_page must be integers") from err
    if page < 1 or per_page < 1 or per_page > MAX_LIMIT:
        raise PaginationError(f"page must be ≥ 1 and per_page between 1 and {MAX_LIMIT}")
    total = len(items)
    start = (page - 1) * per_page
    meta = {
        "page": page,
        "per_page": per_page,
        "total_pages": max(1, math.ceil(total / per_page)),
        "total_count": total,
    }
    return list(items[start : start + per_page]), meta
