"""The whole local flow over real HTTP: the Kapso emulator and the service, wired together."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.core.settings import Settings
from app.main import create_app
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from app.repositories.whatsapp import WhatsAppRepository
from app.services.whatsapp.responder import Responder
from kapso_emulator.app import EmulatorApp
from kapso_emulator.app import create_app as create_emulator
from kapso_emulator.config import EmulatorConfig, StatusDelays
from support.asgi_server import serve
from support.supabase_stack import SupabaseStack

API_KEY = "e2e-kapso-key"
WEBHOOK_SECRET = "e2e-webhook-secret"
PHONE_NUMBER_ID = "1029384756"
WABA_ID = "102290129340398"
JWT_SECRET = "e2e-jwt-secret-that-is-long-enough-0123456789"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class StoreChoice:
    """Which store the service runs on, and how a test reaches it directly."""

    name: str
    settings: dict[str, Any]
    supabase: SupabaseStack | None = None
    sqlite_path: Path | None = None

    async def open(self) -> WhatsAppRepository:
        if self.supabase is not None:
            return await SupabaseWhatsAppRepository.connect(
                self.supabase.url, self.supabase.service_role_key
            )
        assert self.sqlite_path is not None
        return SqliteWhatsAppRepository(self.sqlite_path)


@dataclass
class LocalFlow:
    """A running emulator and service, plus clients to drive and inspect both."""

    service_url: str
    emulator_url: str
    emulator_app: EmulatorApp
    control: httpx.AsyncClient
    service: httpx.AsyncClient
    repository: WhatsAppRepository
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)

    async def say(self, phone: str, text: str = "Hola", **body: Any) -> dict[str, Any]:
        """The user writes (the emulator delivers `whatsapp.message.received`)."""
        response = await self.control.post(
            "/_emulator/inbound", json={"phone": phone, "text": text, **body}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def outbox(
        self, phone: str | None = None, *, wait_count: int = 0, wait_seconds: float = 10.0
    ) -> list[dict[str, Any]]:
        """What the service sent (messages only), waiting for `wait_count` of them."""
        params: dict[str, Any] = {"kind": "message", "wait_count": wait_count}
        params["wait_seconds"] = wait_seconds
        if phone:
            params["to"] = phone
        response = await self.control.get("/_emulator/outbox", params=params)
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def configure_emulator(self, **patch: Any) -> None:
        response = await self.control.patch("/_emulator/config", json=patch)
        assert response.status_code == 200, response.text

    async def fault(self, **fault: Any) -> None:
        response = await self.control.post("/_emulator/faults", json=fault)
        assert response.status_code == 201, response.text

    async def drain_deliveries(self) -> None:
        response = await self.control.post("/_emulator/deliveries/drain", json={"wait_seconds": 30})
        assert response.json()["drained"] is True

    async def post_webhook(
        self,
        body: bytes | dict[str, Any],
        *,
        event: str = "whatsapp.message.received",
        key: str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {
            "Content-Type": "application/json",
            "X-Webhook-Event": event,
            "X-Webhook-Payload-Version": "v2",
            "X-Webhook-Signature": signature if signature is not None else sign(raw),
        }
        if key is not None:
            sent["X-Idempotency-Key"] = key
        sent.update(headers or {})
        return await self.service.post("/api/whatsapp/webhook", content=raw, headers=sent)


def flow_settings(store: StoreChoice, emulator_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kapso_api_key": SecretStr(API_KEY),
        "kapso_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "kapso_base_url": emulator_url,
        "kapso_phone_number_id": PHONE_NUMBER_ID,
        "kapso_waba_id": WABA_ID,
        "kapso_timeout_seconds": 5.0,
        "supabase_jwt_secret": SecretStr(JWT_SECRET),
        "worker_poll_seconds": 0.05,
        "worker_retry_base_seconds": 0.05,
        "worker_retry_max_seconds": 0.2,
        "worker_settle_seconds": 0.3,
        "worker_lease_seconds": 5.0,
        **store.settings,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def local_flow(
    store: StoreChoice,
    *,
    responder: Responder | None = None,
    emulator_config: dict[str, Any] | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[LocalFlow]:
    """Start the emulator, then the service pointed at it, then point the emulator's webhook
    at the service."""
    config = EmulatorConfig(
        webhook_secret=WEBHOOK_SECRET,
        api_key=API_KEY,
        time_scale=0.01,
        webhook_timeout_seconds=500.0,
        status_delays=StatusDelays(sent=0, delivered=0.5, read=1.0),
        **(emulator_config or {}),
    )
    emulator_app = create_emulator(config)
    assert isinstance(emulator_app, EmulatorApp)
    async with serve(emulator_app) as emulator_url:
        settings = flow_settings(store, emulator_url, **settings_overrides)
        app = create_app(settings, responder=responder)
        repository = await store.open()
        try:
            async with (
                serve(app) as service_url,
                httpx.AsyncClient(base_url=emulator_url, timeout=30) as control,
                httpx.AsyncClient(base_url=service_url, timeout=30) as service,
            ):
                flow = LocalFlow(
                    service_url=service_url,
                    emulator_url=emulator_url,
                    emulator_app=emulator_app,
                    control=control,
                    service=service,
                    repository=repository,
                    settings=settings,
                )
                await flow.configure_emulator(webhook_url=f"{service_url}/api/whatsapp/webhook")
                yield flow
                await emulator_app.emulator.webhooks.cancel_all()
        finally:
            await repository.aclose()
