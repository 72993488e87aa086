"""What stands in front of every Kapso endpoint: injected faults, API-key auth and rate limits.

It is plain ASGI (not a Starlette middleware) because dropping a connection needs the server's
own `send`, which Starlette's middleware stack would wrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import math
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kapso_emulator.emulator import Emulator
from kapso_emulator.models import Fault, FaultKind

API_PREFIXES = ("/meta/", "/platform/", "/api/")
# Kapso's `download_url` works without a key (it carries a short-lived token instead).
NO_AUTH_PATHS = ("/meta/whatsapp/media_download",)

IN_FLIGHT_BODY = {
    "error": "Another message is already in-flight for this conversation. Please retry shortly."
}
RATE_LIMIT_BODY = {
    "error": "Rate limit exceeded",
    "message": "Too many requests. Please retry after the time given in Retry-After.",
}


def default_fault_body(status: int) -> Any:
    """Kapso's own body for the statuses it is known to send."""
    if status == 409:
        return IN_FLIGHT_BODY
    if status == 429:
        return RATE_LIMIT_BODY
    if status == 402:
        return {
            "error": "Insufficient credits",
            "code": "insufficient_credits",
            "billing_url": "https://app.kapso.ai/billing",
        }
    if status >= 500:
        return {"error": "Internal server error"}
    return {"error": f"Injected fault ({status})"}


class DroppedConnection(Exception):  # noqa: N818 - it names the event, like ConnectionReset
    """Raised when the server gives no way to close the socket (e.g. an in-process transport)."""


async def _respond(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(body).encode("utf-8")
    header_list = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    for name, value in (headers or {}).items():
        header_list.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": header_list})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


async def drop_connection(send: Send) -> None:
    """Close the TCP connection without answering, as a crashed proxy would."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise DroppedConnection("connection dropped by an injected fault")
    transport.abort()
    # Let the server notice the disconnect, so it does not try to answer with a 500.
    for _ in range(5):
        await asyncio.sleep(0)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def api_key_of(scope: Scope) -> str | None:
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip() or None
    auth = _header(scope, b"authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


class KapsoGateway:
    """Wraps the FastAPI app; `emulator` is read per request so config changes apply at once."""

    def __init__(self, app: ASGIApp, emulator: Callable[[], Emulator]) -> None:
        self.app = app
        self.emulator = emulator

    def _matching(self, method: str, path: str) -> list[Fault]:
        found = []
        for fault in self.emulator().faults:
            if fault.exhausted:
                continue
            if fault.method and fault.method.upper() != method:
                continue
            if fnmatch.fnmatchcase(path, fault.path):
                found.append(fault)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        emulator = self.emulator()
        faults = self._matching(scope["method"], path)
        for fault in faults:
            fault.hits += 1
        for fault in faults:
            if fault.kind is FaultKind.LATENCY:
                await asyncio.sleep(fault.seconds)
        decisive = next((f for f in faults if f.kind is not FaultKind.LATENCY), None)
        if decisive is not None and decisive.kind is FaultKind.DROP:
            await drop_connection(send)
            return
        if decisive is not None and decisive.kind is FaultKind.STATUS:
            body = (
                decisive.body if decisive.body is not None else default_fault_body(decisive.status)
            )
            await _respond(send, decisive.status, body, decisive.headers)
            return

        limit = emulator.config.rate_limit_per_minute
        if path.startswith(NO_AUTH_PATHS):
            await self.app(scope, receive, send)
            return
        key = api_key_of(scope)
        if key is None or (emulator.config.api_key is not None and key != emulator.config.api_key):
            headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(limit)}
            await _respond(send, 401, {"error": "Invalid or missing API key"}, headers)
            return
        now = emulator.clock.now().timestamp()
        minute = math.floor(now / 60)
        start, count = emulator.rate_windows.get(key, (minute, 0))
        if start != minute:
            start, count = minute, 0
        count += 1
        emulator.rate_windows[key] = (start, count)
        rate_headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str((start + 1) * 60),
        }
        if count > limit:
            await _respond(send, 429, RATE_LIMIT_BODY, {**rate_headers, "Retry-After": "60"})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in rate_headers.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if decisive is not None and decisive.kind is FaultKind.TIMEOUT_AFTER_SEND:
            await self._timeout_after_send(scope, receive, send, decisive.seconds)
            return
        await self.app(scope, receive, send_with_headers)

    async def _timeout_after_send(
        self, scope: Scope, receive: Receive, send: Send, seconds: float
    ) -> None:
        """Do the work (the send is recorded) but never answer: the client's read times out."""

        async def swallow(_: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_wait_disconnect(receive), timeout=seconds)
        await drop_connection(send)
