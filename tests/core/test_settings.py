"""The one settings object: defaults, `.env`, and production's refusal to run unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import ConfigurationError, Environment, Settings

ALL_SECRETS = {
    "KAPSO_API_KEY": "sk_live",
    "KAPSO_WEBHOOK_SECRET": "whsec_x",
    "KAPSO_PHONE_NUMBER_ID": "1029384756",
    "SUPABASE_URL": "https://x.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service",
    "SUPABASE_JWT_SECRET": "jwt-secret-of-at-least-32-characters",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the variables it sets (no developer `.env`)."""
    monkeypatch.chdir(tmp_path)
    for name in [*ALL_SECRETS, "ENVIRONMENT", "KAPSO_BASE_URL", "KAPSO_LEGACY_BASE_URL"]:
        monkeypatch.delenv(name, raising=False)


def test_development_defaults() -> None:
    settings = Settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.kapso_base_url == "https://api.kapso.ai"
    assert settings.kapso_graph_version == "v24.0"
    assert settings.kapso_legacy_root == "https://app.kapso.ai"
    assert settings.kapso_api_key is None


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
