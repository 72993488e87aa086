"""The contract suite runs every test against both repositories: Supabase and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from app.repositories.whatsapp import WhatsAppRepository
from support.store_data import RepositoryFactory
from support.supabase_stack import SupabaseStack


@pytest.fixture(params=["supabase", "sqlite"])
async def repository_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RepositoryFactory]:
    opened: list[WhatsAppRepository] = []
    database = tmp_path / "store.sqlite3"

    async def open_repository() -> WhatsAppRepository:
        repository: WhatsAppRepository
        if request.param == "supabase":
            stack: SupabaseStack = request.getfixturevalue("supabase_stack")
            repository = await SupabaseWhatsAppRepository.connect(stack.url, stack.service_role_key)
        else:
            repository = SqliteWhatsAppRepository(database)
        opened.append(repository)
        return repository

    yield open_repository
    for repository in opened:
        await repository.aclose()


@pytest.fixture
async def repository(repository_factory: RepositoryFactory) -> WhatsAppRepository:
    return await repository_factory()


@pytest.fixture
def tag() -> str:
    """A unique prefix for this test's keys, so tests sharing one database never collide."""
    return uuid.uuid4().hex
