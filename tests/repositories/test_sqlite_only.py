"""What only the embedded store has: its file, WAL mode, migration on first use, failures."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from app.repositories.errors import StoreError, StoreUnavailableError
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.sqlite_schema import MIGRATIONS


async def test_created_and_migrated_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.sqlite3"
    repository = SqliteWhatsAppRepository(path)
    assert not path.exists()
    await repository.ping()
    await repository.aclose()

    with sqlite3.connect(path) as connection:
        assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert connection.execute("pragma user_version").fetchone()[0] == len(MIGRATIONS)
    connection.close()

    # A second process opening the same file finds it migrated and keeps the data.
    again = SqliteWhatsAppRepository(path)
    profile = await again.create_profile(phone="+56912345678")
    await again.aclose()
    reopened = SqliteWhatsAppRepository(path)
    assert await reopened.get_profile(profile.id) == profile
    await reopened.aclose()


async def test_unopenable_file_is_a_store_error_not_not_found(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    repository = SqliteWhatsAppRepository(tmp_path / "a-file" / "store.sqlite3")
    with pytest.raises(StoreUnavailableError):
        await repository.find_profile_by_phone("+56912345678")
    await repository.aclose()


async def test_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    repository = SqliteWhatsAppRepository(path)
    with pytest.raises(StoreError):
        await repository.get_active_company(uuid.uuid4())
    await repository.aclose()


async def test_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    repository = SqliteWhatsAppRepository(path, busy_timeout_seconds=0.2)
    await repository.ping()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin exclusive")
    try:
        with pytest.raises(StoreUnavailableError):
            await repository.create_company(business_name="Blocked SpA")
    finally:
        holder.execute("rollback")
        holder.close()
    company = await repository.create_company(business_name="Unblocked SpA")
    assert company.business_name == "Unblocked SpA"
    await repository.aclose()


async def test_processes_opening_a_new_file_at_once_all_get_in(tmp_path: Path) -> None:
    """Switching a new file to WAL makes SQLite answer "locked" at once (no busy wait) to a
    connection opening it at the same moment; that used to fail a few percent of first
    writes (seen in CI). Many fresh files, four connections racing on each."""
    import asyncio

    for attempt in range(60):
        path = tmp_path / f"race-{attempt}.sqlite3"
        repositories = [SqliteWhatsAppRepository(path) for _ in range(4)]
        try:
            await asyncio.gather(*(repository.ping() for repository in repositories))
        finally:
            for repository in repositories:
                await repository.aclose()
