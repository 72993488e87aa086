"""`KapsoClient`: one object per process, one HTTP connection pool, one attribute per API."""

from __future__ import annotations

from types import TracebackType

import httpx

from app.integrations.kapso.api.base import (
    DEFAULT_BASE_URL,
    DEFAULT_GRAPH_VERSION,
    DEFAULT_LEGACY_BASE_URL,
    KapsoHTTP,
    RateLimitState,
    RetryPolicy,
    Sleep,
)
from app.integrations.kapso.api.contacts import ContactsAPI
from app.integrations.kapso.api.conversations import ConversationsAPI
from app.integrations.kapso.api.media import MediaAPI
from app.integrations.kapso.api.messages import MessagesAPI
from app.integrations.kapso.api.phone_numbers import PhoneNumbersAPI
from app.integrations.kapso.api.recipients import RecipientResolver
from app.integrations.kapso.api.templates import TemplatesAPI
from app.integrations.kapso.api.webhooks import WebhooksAPI


class KapsoClient:
    """Async client of Kapso's WhatsApp (Meta proxy), Platform and legacy APIs.

    Use it as `async with KapsoClient(api_token=...) as client:` or call `aclose()`.
    `base_url` and `graph_version` point it anywhere, e.g. at the local emulator.
    """

    def __init__(
        self,
        api_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        legacy_base_url: str | None = None,
        graph_version: str = DEFAULT_GRAPH_VERSION,
        phone_number_id: str | None = None,
        waba_id: str | None = None,
        webhook_secret: str | None = None,
        timeout: float | httpx.Timeout = 15.0,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if legacy_base_url is None:
            legacy_base_url = (
                DEFAULT_LEGACY_BASE_URL if base_url.rstrip("/") == DEFAULT_BASE_URL else base_url
            )
        extra = {"sleep": sleep} if sleep is not None else {}
        self._http = KapsoHTTP(
            api_token,
            base_url=base_url,
            legacy_base_url=legacy_base_url,
            graph_version=graph_version,
            timeout=timeout,
            retry=retry or RetryPolicy(max_retries=max_retries),
            http_client=http_client,
            **extra,
        )
        self.conversations = ConversationsAPI(self._http)
        recipients = RecipientResolver(self.conversations, phone_number_id)
        self.messages = MessagesAPI(self._http, recipients)
        self.contacts = ContactsAPI(self._http)
        self.templates = TemplatesAPI(self._http, self.messages, waba_id)
        self.media = MediaAPI(self._http, phone_number_id)
        self.phone_numbers = PhoneNumbersAPI(self._http)
        self.webhooks = WebhooksAPI(webhook_secret)

    @property
    def rate_limit(self) -> RateLimitState | None:
        """`X-RateLimit-Limit`/`-Remaining` from the most recent response."""
        return self._http.rate_limit

    @property
    def rate_limit_remaining(self) -> int | None:
        state = self._http.rate_limit
        return state.remaining if state else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> KapsoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
