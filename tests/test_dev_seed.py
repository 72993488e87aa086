"""The demo user ./dev.sh seeds: a known WhatsApp user with an active company, seeded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import get_settings
from app.dev_seed import DEMO_COMPANY, DEMO_NAME, DEMO_PHONE, seed
from app.repositories.stores import Stores


async def test_seed_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, stores: Stores
) -> None:
    # The developer's .env (read from the working directory) must not decide the database.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        message = await seed()
        assert DEMO_NAME in message
        assert DEMO_PHONE in message
        await seed()
    finally:
        get_settings.cache_clear()

    profile = await stores.directory.find_profile_by_phone("56912345678")
    assert profile is not None
    assert profile.phone == DEMO_PHONE
    assert profile.full_name == DEMO_NAME
    assert profile.phone_verified is True
    companies = await stores.directory.list_user_companies(profile.id)
    assert [c.business_name for c in companies] == [DEMO_COMPANY]
    active = await stores.directory.get_active_company(profile.id)
    assert active == companies[0]
    # Seeded once: one profile on the number, one session.
    rows = await stores.database.fetch(
        """select (select count(*) from public.profiles where phone_e164 = $1) as profiles,
                  (select count(*) from public.sessions) as sessions""",
        DEMO_PHONE,
    )
    assert (rows[0]["profiles"], rows[0]["sessions"]) == (1, 1)
