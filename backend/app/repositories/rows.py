"""Rows read from PostgreSQL as the records the stores return."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError

from app.repositories.errors import StoreError

ModelT = TypeVar("ModelT", bound=BaseModel)
# A row from asyncpg, or one already turned into a dict.
Row = asyncpg.Record | Mapping[str, Any]


def parse(model: type[ModelT], row: Row) -> ModelT:
    """A row as `model`; data the model refuses is a store error, never a crash elsewhere."""
    try:
        return model.model_validate(dict(row))
    except ValidationError as err:
        raise StoreError(f"unexpected data in the store: {err.error_count()} errors") from err


def parse_optional(model: type[ModelT], row: Row | None) -> ModelT | None:
    return parse(model, row) if row is not None else None


def parse_all(model: type[ModelT], rows: Iterable[Row]) -> list[ModelT]:
    return [parse(model, row) for row in rows]


def required(row: Row | None, what: str) -> Row:
    if row is None:
        raise StoreError(f"the store returned no {what}")
    return row
