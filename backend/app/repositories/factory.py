"""Choose and build the WhatsApp repository from the settings (once per process)."""

from __future__ import annotations

from typing import Literal

from app.core.settings import ConfigurationError, Settings
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from app.repositories.whatsapp import WhatsAppRepository

StoreBackend = Literal["supabase", "sqlite"]


def _secret(settings: Settings) -> str:
    key = settings.supabase_service_role_key
    return key.get_secret_value() if key is not None else ""


def resolve_store_backend(settings: Settings) -> StoreBackend:
    """STORE_BACKEND when explicit; else Supabase if its URL and service key are set."""
    if settings.store_backend != "auto":
        return settings.store_backend
    if settings.supabase_url and _secret(settings):
        return "supabase"
    return "sqlite"


async def create_whatsapp_repository(settings: Settings) -> WhatsAppRepository:
    """Build the configured repository; call it once (e.g. in the app's lifespan)."""
    if resolve_store_backend(settings) == "supabase":
        if not settings.supabase_url or not _secret(settings):
            raise ConfigurationError(
                "STORE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
            )
        return await SupabaseWhatsAppRepository.connect(
            settings.supabase_url,
            _secret(settings),
            timeout_seconds=settings.store_timeout_seconds,
        )
    return SqliteWhatsAppRepository(
        settings.sqlite_path, busy_timeout_seconds=settings.store_timeout_seconds
    )
