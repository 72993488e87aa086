"""The emulator's FastAPI app: Kapso's three APIs, the control API and the chat page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from kapso_emulator import chat_page, control, legacy_api, meta_proxy, platform_api
from kapso_emulator.config import DEFAULT_WEBHOOK_CONCURRENCY, EmulatorConfig
from kapso_emulator.emulator import Emulator
from kapso_emulator.errors import install_error_handlers
from kapso_emulator.gateway import KapsoGateway


class EmulatorApp(FastAPI):
    """A FastAPI app whose every request first passes the `KapsoGateway` (faults, auth, limits)."""

    def __init__(self, emulator: Emulator) -> None:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            await self.emulator.webhooks.close()

        super().__init__(
            title="Kapso emulator",
            description="A local, stateful stand-in for the parts of Kapso Fizko uses.",
            lifespan=lifespan,
        )
        self.emulator = emulator
        self.state.emulator = emulator
        self._gateway = KapsoGateway(self._route, lambda: self.emulator)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._gateway(scope, receive, send)


def create_app(
    config: EmulatorConfig | None = None,
    state_file: Path | None = None,
    *,
    webhook_concurrency: int = DEFAULT_WEBHOOK_CONCURRENCY,
) -> FastAPI:
    """Build an emulator; `uvicorn kapso_emulator.app:create_app --factory` works too."""
    emulator = Emulator(
        config or EmulatorConfig(), state_file, webhook_concurrency=webhook_concurrency
    )
    app = EmulatorApp(emulator)
    install_error_handlers(app)
    app.include_router(meta_proxy.download_router)
    app.include_router(meta_proxy.router)
    app.include_router(platform_api.router)
    app.include_router(legacy_api.router)
    app.include_router(control.router)
    app.include_router(chat_page.router)
    return app
