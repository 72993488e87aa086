"""Which store the service uses: Supabase when configured, the embedded file otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from app.core.settings import ConfigurationError, Settings
from app.repositories import create_whatsapp_repository, resolve_store_backend
from support.supabase_stack import SupabaseStack


def settings(**values: object) -> Settings:
    # _env_file=None: the developer's .env must not decide what the test sees.
    base: dict[str, object] = {
        "supabase_url": None,
        "supabase_service_role_key": None,
        "store_backend": "auto",
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


def test_auto_selects_sqlite_without_supabase() -> None:
    assert resolve_store_backend(settings()) == "sqlite"
    assert resolve_store_backend(settings(supabase_url="https://x.supabase.co")) == "sqlite"
    assert (
        resolve_store_backend(
            settings(supabase_url="https://x.supabase.co", supabase_service_role_key=SecretStr(""))
        )
        == "sqlite"
    )


def test_auto_selects_supabase_when_configured() -> None:
    configured = settings(
        supabase_url="https://x.supabase.co", supabase_service_role_key=SecretStr("key")
    )
    assert resolve_store_backend(configured) == "supabase"


def test_explicit_setting_overrides() -> None:
    configured = settings(
        supabase_url="https://x.supabase.co",
        supabase_service_role_key=SecretStr("key"),
        store_backend="sqlite",
    )
    assert resolve_store_backend(configured) == "sqlite"
    assert resolve_store_backend(settings(store_backend="supabase")) == "supabase"


async def test_explicit_supabase_without_credentials_refuses() -> None:
    with pytest.raises(ConfigurationError):
        await create_whatsapp_repository(settings(store_backend="supabase"))


async def test_builds_the_embedded_store(tmp_path: Path) -> None:
    repository = await create_whatsapp_repository(
        settings(sqlite_path=str(tmp_path / "dev.sqlite3"))
    )
    assert repository.backend_name == "sqlite"
    await repository.ping()
    await repository.aclose()
    assert (tmp_path / "dev.sqlite3").exists()


async def test_builds_the_supabase_store(supabase_stack: SupabaseStack) -> None:
    repository = await create_whatsapp_repository(
        settings(
            supabase_url=supabase_stack.url,
            supabase_service_role_key=SecretStr(supabase_stack.service_role_key),
        )
    )
    assert repository.backend_name == "supabase"
    await repository.ping()
    await repository.aclose()
