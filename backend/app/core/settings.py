"""The one settings object, read from the environment and `.env`."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ConfigurationError(RuntimeError):
    """The configuration is unsafe or incomplete for the chosen environment."""


class Settings(BaseSettings):
    """Every setting the service reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `KEY=` in .env (as .env.example has) means "not set", not an empty value.
        env_ignore_empty=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    # FastAPI's native OpenTelemetry (traces, metrics, logs; it needs an OTel SDK configured).
    # Off by default: even unused, it checks for an OTel provider on every request.
    telemetry_enabled: bool = False

    # Kapso
    kapso_api_key: SecretStr | None = None
    kapso_project_id: str | None = None
    kapso_webhook_secret: SecretStr | None = None
    kapso_base_url: str = "https://api.kapso.ai"
    kapso_legacy_base_url: str | None = Field(
        default=None,
        description="Legacy API root; defaults to https://app.kapso.ai for the real Kapso, "
        "or to KAPSO_BASE_URL when that points elsewhere (an emulator).",
    )
    kapso_graph_version: str = "v24.0"
    kapso_phone_number_id: str | None = None
    kapso_waba_id: str | None = None
    kapso_timeout_seconds: float = Field(default=15.0, gt=0)
    kapso_max_retries: int = Field(default=3, ge=0, le=10)

    # Supabase
    supabase_url: str | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_jwt_secret: SecretStr | None = None

    # Storage: PostgreSQL, directly (asyncpg). Without DATABASE_URL an embedded PostgreSQL
    # starts with the app (data in EMBEDDED_POSTGRES_DIR), shared by every process of the checkout.
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://... — hosted Supabase: the project's connection string, or its "
        "Supavisor pooler (session mode :5432, transaction mode :6543).",
    )
    database_pooler: Literal["auto", "session", "transaction"] = Field(
        default="auto",
        description="transaction: a transaction-mode pooler is in between (no prepared "
        "statements, no LISTEN); auto: transaction when DATABASE_URL's port is 6543.",
    )
    database_pool_min_size: int = Field(default=2, ge=0, le=100)
    database_pool_max_size: int = Field(default=10, ge=1, le=200)
    embedded_postgres_dir: Path = Path(".local/postgres")
    migrate_on_start: bool | None = Field(
        default=None,
        description="Apply pending migrations at start. Default: yes, except in production, "
        "where the service only checks they are applied and refuses to start otherwise.",
    )
    # Under Kapso's 10 s webhook deadline, so a stuck store answers 503 before Kapso gives up.
    store_timeout_seconds: float = Field(default=5.0, gt=0)

    # JWT verification
    supabase_jwks_url: str | None = Field(
        default=None,
        description="JWKS of the project's asymmetric signing keys; defaults to "
        "<SUPABASE_URL>/auth/v1/.well-known/jwks.json.",
    )
    supabase_jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=600, ge=1)

    # Inbound webhooks and the inbox worker
    webhook_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    worker_enabled: bool = Field(
        default=True, description="Run the inbox worker inside the API process."
    )
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    worker_batch_size: int = Field(default=16, ge=1, le=500)
    worker_lease_seconds: float = Field(default=60.0, gt=1)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    worker_max_attempts: int = Field(default=6, ge=1, le=50)
    worker_retry_base_seconds: float = Field(default=2.0, gt=0)
    worker_retry_max_seconds: float = Field(default=300.0, gt=0)
    # A reply whose send may have reached Kapso is checked against Kapso's history only after
    # this long, so a message Kapso is still recording is not taken for a lost one.
    worker_settle_seconds: float = Field(default=20.0, ge=0)

    # The send API
    send_rate_limit_per_minute: int = Field(
        default=30, ge=1, description="Sends per user per minute (per process)."
    )

    # Phone authentication and what WhatsApp users read
    auth_cache_ttl_seconds: float = Field(
        default=3600.0, ge=0, description="How long a conversation's cached user/company holds."
    )
    registration_notice_interval_seconds: float = Field(default=86_400.0, ge=0)
    fizko_app_url: str = "https://app.fizko.ai"
    whatsapp_texts_file: Path | None = None

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def missing_production_secrets(self) -> list[str]:
        """Names of the variables production cannot run without."""
        required: dict[str, object] = {
            "KAPSO_API_KEY": self.kapso_api_key,
            "KAPSO_WEBHOOK_SECRET": self.kapso_webhook_secret,
            "KAPSO_PHONE_NUMBER_ID": self.kapso_phone_number_id,
            "DATABASE_URL": self.database_url,
            "SUPABASE_URL": self.supabase_url,
            "SUPABASE_JWT_SECRET": self.supabase_jwt_secret,
        }
        missing = []
        for name, value in required.items():
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not text:
                missing.append(name)
        return missing

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.is_production:
            missing = self.missing_production_secrets()
            if missing:
                raise ConfigurationError(
                    "ENVIRONMENT=production but these required settings are missing: "
                    + ", ".join(missing)
                )
        return self

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return not self.is_production

    @property
    def uses_transaction_pooler(self) -> bool:
        if self.database_pooler != "auto":
            return self.database_pooler == "transaction"
        if self.database_url is None:
            return False
        try:
            return urlsplit(self.database_url.get_secret_value()).port == 6543
        except ValueError:
            return False

    @property
    def kapso_legacy_root(self) -> str:
        if self.kapso_legacy_base_url:
            return self.kapso_legacy_base_url
        if self.kapso_base_url.rstrip("/") == "https://api.kapso.ai":
            return "https://app.kapso.ai"
        return self.kapso_base_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once."""
    return Settings()
