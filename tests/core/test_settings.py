"""The one settings object: defaults, `.env`, and production's refusal to run unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.settings import ConfigurationError, Environment, Settings

ALL_SECRETS = {
    "KAPSO_API_KEY": "sk_live",
    "KAPSO_WEBHOOK_SECRET": "whsec_x",
    "KAPSO_PHONE_NUMBER_ID": "1029384756",
    "DATABASE_URL": "postgresql://postgres:pw@db.x.supabase.co:5432/postgres",
    "SUPABASE_URL": "https://x.supabase.co",
    "SUPABASE_JWT_SECRET": "jwt-secret-of-at-least-32-characters",
}
# Settings of the stores that are gone: if still set somewhere, they change nothing.
REMOVED = {
    "STORE_BACKEND": "supabase",
    "SQLITE_PATH": "/tmp/whatsapp.sqlite3",
    "SUPABASE_SERVICE_ROLE_KEY": "service",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the variables it sets (no developer `.env`)."""
    monkeypatch.chdir(tmp_path)
    for name in [
        *ALL_SECRETS,
        *REMOVED,
        "ENVIRONMENT",
        "KAPSO_BASE_URL",
        "KAPSO_LEGACY_BASE_URL",
        "DATABASE_POOLER",
        "MIGRATE_ON_START",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_development_defaults() -> None:
    settings = Settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.kapso_base_url == "https://api.kapso.ai"
    assert settings.kapso_graph_version == "v24.0"
    assert settings.kapso_legacy_root == "https://app.kapso.ai"
    assert settings.kapso_api_key is None
    # No DATABASE_URL: the embedded PostgreSQL, migrated at start.
    assert settings.database_url is None
    assert settings.should_migrate_on_start
    assert not settings.uses_transaction_pooler


def test_legacy_root_follows_an_emulator_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPSO_BASE_URL", "http://127.0.0.1:8091")
    assert Settings().kapso_legacy_root == "http://127.0.0.1:8091"


def test_reads_dotenv_and_hides_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAPSO_API_KEY=sk_from_file\nKAPSO_WABA_ID=waba-9\n")
    settings = Settings()
    assert settings.kapso_api_key is not None
    assert settings.kapso_api_key.get_secret_value() == "sk_from_file"
    assert "sk_from_file" not in repr(settings)
    assert settings.kapso_waba_id == "waba-9"


def test_database_url_is_a_secret(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://postgres:s3cr3t-pw@db:5432/app\n")
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://postgres:s3cr3t-pw@db:5432/app"
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings.model_dump())


def test_production_refuses_to_start_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("KAPSO_API_KEY", "sk_live")
    with pytest.raises(ConfigurationError) as info:
        Settings()
    message = str(info.value)
    for name in ALL_SECRETS:
        if name != "KAPSO_API_KEY":
            assert name in message
    assert "KAPSO_API_KEY" not in message


def test_production_with_every_secret_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    for name, value in ALL_SECRETS.items():
        monkeypatch.setenv(name, value)
    assert Settings().is_production


def test_empty_secret_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    for name, value in ALL_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KAPSO_WEBHOOK_SECRET", "")
    with pytest.raises(ConfigurationError, match="KAPSO_WEBHOOK_SECRET"):
        Settings()


def test_production_needs_a_database_url_not_a_service_role_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    for name, value in ALL_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABASE_URL")
    # The removed stores' settings stand in for nothing.
    for name, value in REMOVED.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    message = str(info.value)
    assert "DATABASE_URL" in message
    for name in REMOVED:
        assert name not in message


def test_the_removed_store_settings_are_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REMOVED.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for name in REMOVED:
        assert name.lower() not in Settings.model_fields
        assert not hasattr(settings, name.lower())


@pytest.mark.parametrize(
    ("environment", "explicit", "expected"),
    [
        # Auto: migrate in development; production only checks (and refuses a stale schema).
        ("development", None, True),
        ("production", None, False),
        ("development", "false", False),
        ("production", "true", True),
    ],
)
def test_migrate_on_start(
    monkeypatch: pytest.MonkeyPatch, environment: str, explicit: str | None, expected: bool
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    for name, value in ALL_SECRETS.items():
        monkeypatch.setenv(name, value)
    if explicit is not None:
        monkeypatch.setenv("MIGRATE_ON_START", explicit)
    settings = Settings()
    assert settings.migrate_on_start is (None if explicit is None else explicit == "true")
    assert settings.should_migrate_on_start is expected


@pytest.mark.parametrize(
    ("url", "pooler", "expected"),
    [
        # Supavisor: transaction mode listens on 6543, session mode on 5432.
        (
            "postgresql://postgres.ref:pw@aws-0-sa-east-1.pooler.supabase.com:6543/postgres",
            None,
            True,
        ),
        (
            "postgresql://postgres.ref:pw@aws-0-sa-east-1.pooler.supabase.com:5432/postgres",
            None,
            False,
        ),
        ("postgresql://postgres:pw@db.ref.supabase.co/postgres", None, False),
        ("postgresql://postgres@/app?host=/run/postgresql&port=6543", None, False),
        ("postgresql://postgres@db:not-a-port/app", None, False),
        (None, None, False),
        # Explicit beats the port.
        ("postgresql://postgres:pw@pooler.example:6543/postgres", "session", False),
        ("postgresql://postgres:pw@pooler.example:5432/postgres", "transaction", True),
        ("postgresql://postgres:pw@pooler.example:6543/postgres", "auto", True),
    ],
)
def test_uses_transaction_pooler(
    monkeypatch: pytest.MonkeyPatch, url: str | None, pooler: str | None, expected: bool
) -> None:
    if url is not None:
        monkeypatch.setenv("DATABASE_URL", url)
    if pooler is not None:
        monkeypatch.setenv("DATABASE_POOLER", pooler)
    assert Settings().uses_transaction_pooler is expected


def test_an_unknown_pooler_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_POOLER", "statement")
    with pytest.raises(ValidationError, match="database_pooler"):
        Settings()
