"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.core.logging import configure_logging
from app.core.settings import Settings, get_settings
from app.integrations.kapso import KapsoClient


def build_kapso_client(settings: Settings) -> KapsoClient:
    """The process's one Kapso client, configured from settings."""
    api_key = settings.kapso_api_key.get_secret_value() if settings.kapso_api_key else ""
    return KapsoClient(
        api_token=api_key,
        base_url=settings.kapso_base_url,
        legacy_base_url=settings.kapso_legacy_root,
        graph_version=settings.kapso_graph_version,
        timeout=settings.kapso_timeout_seconds,
        max_retries=settings.kapso_max_retries,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; shared clients are created once in the lifespan."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_kapso_client(settings) as kapso:
            app.state.settings = settings
            app.state.kapso = kapso
            yield

    app = FastAPI(
        title="Fizko WhatsApp integration",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "environment": settings.environment.value}

    return app
