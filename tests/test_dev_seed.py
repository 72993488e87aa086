"""The demo user ./dev.sh seeds: a known WhatsApp user with an active company, seeded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import get_settings
from app.dev_seed import DEMO_COMPANY, DEMO_PHONE, seed
from app.repositories.sqlite_repository import SqliteWhatsAppRepository


async def test_seed_is_idempotent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    database = tmp_path / "dev.sqlite3"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORE_BACKEND", "sqlite")
    monkeypatch.setenv("SQLITE_PATH", str(database))
    get_settings.cache_clear()
    try:
        assert "sqlite" in await seed()
        await seed()
    finally:
        get_settings.cache_clear()

    repository = SqliteWhatsAppRepository(database)
    try:
        profile = await repository.find_profile_by_phone("56912345678")
        assert profile is not None
        assert profile.phone == DEMO_PHONE
        companies = await repository.list_user_companies(profile.id)
        assert [c.business_name for c in companies] == [DEMO_COMPANY]
    finally:
        await repository.aclose()
