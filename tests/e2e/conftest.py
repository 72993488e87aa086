"""End-to-end fixtures: the service on each store, the emulator, both over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.e2e import LocalFlow, StoreChoice, local_flow
from support.supabase_stack import SupabaseStack


@pytest.fixture(params=["sqlite", "supabase"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreChoice:
    if request.param == "supabase":
        stack: SupabaseStack = request.getfixturevalue("supabase_stack")
        return StoreChoice(
            name="supabase",
            supabase=stack,
            settings={
                "store_backend": "supabase",
                "supabase_url": stack.url,
                "supabase_service_role_key": stack.service_role_key,
            },
        )
    path = tmp_path / "service.sqlite3"
    return StoreChoice(
        name="sqlite",
        sqlite_path=path,
        settings={"store_backend": "sqlite", "sqlite_path": str(path)},
    )


@pytest.fixture
async def flow(store: StoreChoice) -> AsyncIterator[LocalFlow]:
    async with local_flow(store) as running:
        yield running
