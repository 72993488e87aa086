"""Helpers every router shares: the emulator dependency, dates, pagination in each error shape."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from kapso_emulator.emulator import Emulator
from kapso_emulator.errors import GraphError, PlatformError, invalid_parameter
from kapso_emulator.pagination import PaginationError, RecordT, cursor_page


def get_emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


EmulatorDep = Annotated[Emulator, Depends(get_emulator)]


def public_url(request: Request, emulator: Emulator) -> str:
    return emulator.public_url(str(request.base_url))


def parse_time(raw: str | None, name: str, *, graph: bool) -> datetime | None:
    """An ISO 8601 filter value; naive times are taken as UTC."""
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as err:
        message = f"Invalid {name}: expected an ISO 8601 date-time"
        if graph:
            raise invalid_parameter(message) from err
        raise PlatformError(400, message) from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_bool(raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    return raw.lower() in ("1", "true", "yes")


def graph_page(request: Request, items: Sequence[RecordT]) -> tuple[list[RecordT], dict[str, Any]]:
    """Cursor pagination on the Meta proxy (errors in the Graph envelope)."""
    query = request.query_params
    try:
        return cursor_page(
            items,
            url=request.url,
            limit_raw=query.get("limit"),
            before=query.get("before"),
            after=query.get("after"),
        )
    except PaginationError as err:
        raise GraphError(f"(#100) {err}", code=100) from err


def platform_page(
    request: Request, items: Sequence[RecordT]
) -> tuple[list[RecordT], dict[str, Any]]:
    """Cursor pagination on the Platform API (400 `{"error"}` on bad values)."""
    query = request.query_params
    try:
        return cursor_page(
            items,
            url=request.url,
            limit_raw=query.get("limit") or query.get("per_page"),
            before=query.get("before"),
            after=query.get("after"),
        )
    except PaginationError as err:
        raise PlatformError(400, str(err)) from err
