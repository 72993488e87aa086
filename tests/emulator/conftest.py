"""Emulator tests' fixtures: the emulator and a webhook receiver, both real HTTP servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from kapso_emulator.app import EmulatorApp, create_app
from kapso_emulator.config import EmulatorConfig, StatusDelays
from kapso_emulator.emulator import Emulator
from support.asgi_server import serve

API_KEY = "test-key"
PHONE_NUMBER_ID = "1029384756"
WABA_ID = "102290129340398"
USER = "+56912345678"
USER_WA_ID = "56912345678"
SECRET = "whsec-test"
# Kapso's seconds become hundredths: retries at +0.1 s, +0.4 s, +0.9 s.
TIME_SCALE = 0.01


@dataclass
class Received:
    body: bytes
    headers: httpx.Headers
    at: float


@dataclass
class WebhookReceiver:
    """A tiny webhook endpoint: records every request and answers as told."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    # Statuses to answer with, in order; once used up, 200.
    script: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0
    # Each delivery (idempotency key) is answered 500 this many times before the script applies.
    failures_per_delivery: int = 0
    # Requests being answered right now, and the most there ever were at once.
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = httpx.Headers([(k.decode(), v.decode()) for k, v in scope["headers"]])
            self.requests.append(Received(body=body, headers=headers, at=time.monotonic()))
            seen = sum(
                1
                for r in self.requests
                if r.headers.get("x-idempotency-key") == headers.get("x-idempotency-key")
            )
            if seen <= self.failures_per_delivery:
                status = 500
            else:
                status = self.script.pop(0) if self.script else 200
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.in_flight -= 1

    def events(self) -> list[str]:
        return [r.headers["x-webhook-event"] for r in self.requests]


@dataclass
class RunningEmulator:
    """An emulator served over HTTP, plus direct access to its in-process state for asserts."""

    url: str
    app: EmulatorApp
    client: httpx.AsyncClient

    @property
    def emulator(self) -> Emulator:
        return self.app.emulator

    def proxy(self, path: str) -> str:
        return f"/meta/whatsapp/v24.0/{path.lstrip('/')}"

    async def inbound(self, phone: str = USER, **body: Any) -> dict[str, Any]:
        body.setdefault("text", "Hola")
        response = await self.client.post("/_emulator/inbound", json={"phone": phone, **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def configure(self, **patch: Any) -> dict[str, Any]:
        response = await self.client.patch("/_emulator/config", json=patch)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def send_text(
        self, body: str = "Hola María", read_timeout: float | None = None, **extra: Any
    ) -> httpx.Response:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": USER_WA_ID,
            "type": "text",
            "text": {"body": body},
            **extra,
        }
        return await self.client.post(
            self.proxy(f"{PHONE_NUMBER_ID}/messages"), json=payload, timeout=read_timeout or 10
        )

    async def drain(self) -> None:
        response = await self.client.post("/_emulator/deliveries/drain", json={"wait_seconds": 20})
        assert response.json()["drained"] is True

    async def deliveries(self, event: str | None = None) -> list[dict[str, Any]]:
        params = {"event": event} if event else {}
        response = await self.client.get("/_emulator/deliveries", params=params)
        data: list[dict[str, Any]] = response.json()["data"]
        return data


def make_config(**overrides: Any) -> EmulatorConfig:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "time_scale": TIME_SCALE,
        # 10 s × 0.01 would be 0.1 s: too tight for a busy CI machine, except where tested.
        "webhook_timeout_seconds": 200.0,
        "status_delays": StatusDelays(sent=0, delivered=1, read=3),
        **overrides,
    }
    return EmulatorConfig(**values)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    async with serve(hook) as url:
        hook.url = url + "/webhook"
        yield hook


@pytest.fixture
async def kapso() -> AsyncIterator[RunningEmulator]:
    """An emulator with no webhook URL (deliveries are recorded, not sent)."""
    app = create_app(make_config())
    assert isinstance(app, EmulatorApp)
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as client,
    ):
        yield RunningEmulator(url=url, app=app, client=client)
        await app.emulator.webhooks.cancel_all()


@asynccontextmanager
async def running_emulator(config: EmulatorConfig, **create: Any) -> AsyncIterator[RunningEmulator]:
    """An emulator served over HTTP (`create`: more `create_app` arguments), closed after."""
    app = create_app(config, **create)
    assert isinstance(app, EmulatorApp)
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as client,
    ):
        yield RunningEmulator(url=url, app=app, client=client)
        await app.emulator.webhooks.cancel_all()


@pytest.fixture
async def kapso_hooked(receiver: WebhookReceiver) -> AsyncIterator[RunningEmulator]:
    """An emulator delivering webhooks to `receiver`."""
    async with running_emulator(make_config(webhook_url=receiver.url)) as running:
        yield running
