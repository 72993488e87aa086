"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.container import build_container
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.settings import Settings, get_settings
from app.repositories.errors import StoreUnavailableError
from app.routers.whatsapp.main import include_whatsapp_routes
from app.services.whatsapp.responder import Responder

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, responder: Responder | None = None) -> FastAPI:
    """Build the app; shared clients are created once in the lifespan."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_container(settings, responder=responder) as container:
            app.state.settings = settings
            app.state.container = container
            app.state.kapso = container.kapso
            app.state.jwt_verifier = container.jwt_verifier
            if not settings.kapso_webhook_secret:
                logger.warning(
                    "KAPSO_WEBHOOK_SECRET is not set: webhooks are accepted UNSIGNED "
                    "(development only; production refuses to start)"
                )
            worker_task = None
            if settings.worker_enabled:
                container.notifications.start()
                worker_task = asyncio.create_task(container.worker.run(), name="inbox-worker")
            logger.info("In-process worker: %s", "on" if worker_task else "off")
            try:
                yield
            finally:
                if worker_task is not None:
                    await container.notifications.stop()
                    await container.worker.stop()
                    await worker_task

    app = FastAPI(
        title="Fizko WhatsApp integration",
        version="0.1.0",
        summary="Kapso webhooks in, WhatsApp messages out, for Fizko's users.",
        lifespan=lifespan,
        telemetry=None
        if settings.telemetry_enabled
        else {"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app, unavailable=(StoreUnavailableError,))
    include_whatsapp_routes(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "environment": settings.environment.value}

    return app
