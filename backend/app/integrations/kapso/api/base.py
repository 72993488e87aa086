"""The HTTP core every Kapso API module shares: auth, URLs, timeouts, retries, error mapping."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.integrations.kapso.exceptions import (
    KapsoAPIError,
    KapsoConflictError,
    KapsoConnectionError,
    KapsoServerError,
    KapsoTimeoutError,
    error_from_response,
)

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
QueryParams = Mapping[str, str | int | float | bool | None]

DEFAULT_BASE_URL = "https://api.kapso.ai"
DEFAULT_LEGACY_BASE_URL = "https://app.kapso.ai"
DEFAULT_GRAPH_VERSION = "v24.0"

_RETRYABLE_READ_STATUSES = frozenset({408, 409, 429})
_IN_FLIGHT_MARKER = "in-flight"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to wait between attempts."""

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After longer than this is not waited for: the error reaches the caller instead.
    max_retry_after: float = 10.0

    def backoff(self, attempt: int) -> float:
        """Exponential delay with full jitter for retry number `attempt` (0-based)."""
        ceiling = min(self.max_delay, self.initial_delay * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """Kapso's rate-limit headers as seen on the most recent response."""

    limit: int | None
    remaining: int | None
    observed_at: float


Sleep = Callable[[float], Awaitable[None]]


class KapsoHTTP:
    """Owns the one `httpx.AsyncClient` of a `KapsoClient` and performs every request."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        legacy_base_url: str = DEFAULT_LEGACY_BASE_URL,
        graph_version: str = DEFAULT_GRAPH_VERSION,
        timeout: float | httpx.Timeout = 15.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._legacy = legacy_base_url.rstrip("/")
        self.graph_version = graph_version
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.rate_limit: RateLimitState | None = None
        headers = {"X-API-Key": api_key, "Accept": "application/json"}
        if http_client is None:
            self._client = httpx.AsyncClient(
                timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
                headers=headers,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._owns_client = True
        else:
            http_client.headers.update(headers)
            self._client = http_client
            self._owns_client = False

    # URLs of the three APIs -------------------------------------------------------------
    def proxy_url(self, path: str) -> str:
        """Meta-proxy (WhatsApp API) URL: bare Graph shapes."""
        return f"{self._base}/meta/whatsapp/{self.graph_version}/{path.lstrip('/')}"

    def platform_url(self, path: str) -> str:
        """Platform API v1 URL: `{"data": ...}` envelopes."""
        return f"{self._base}/platform/v1/{path.lstrip('/')}"

    def legacy_url(self, path: str) -> str:
        """Deprecated legacy API URL, used only where nothing newer exists."""
        return f"{self._legacy}/api/v1/{path.lstrip('/')}"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # Requests ---------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        url: str,
        *,
        params: QueryParams | None = None,
        json: Any = None,
        files: Any = None,
        data: Mapping[str, str] | None = None,
        is_send: bool = False,
        authenticated: bool = True,
    ) -> httpx.Response:
        """Perform one logical request with retries; return the successful response.

        `is_send` marks a request whose repetition could have an effect twice (a message
        send): it is retried only when it surely did not take effect.
        """
        clean_params = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                outgoing = self._client.build_request(
                    method,
                    url,
                    # An empty mapping would erase a query already in `url` (download links).
                    params=clean_params or None,
                    json=json,
                    files=files,
                    data=data,
                )
                if not authenticated:
                    # Download URLs may point at Meta or a CDN: never hand them our key.
                    outgoing.headers.pop("X-API-Key", None)
                response = await self._client.send(outgoing)
            except httpx.TimeoutException as exc:
                # Connect and pool timeouts happen before the request leaves: always safe.
                sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                error: KapsoAPIError = KapsoTimeoutError(
                    f"Kapso did not answer in time ({type(exc).__name__})", request_sent=sent
                )
                if self._may_retry_transport(attempt, sent=sent, is_send=is_send):
                    await self._wait(attempt, None)
                    attempt += 1
                    continue
                raise error from exc
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError)
                error = KapsoConnectionError(
                    f"Could not reach Kapso ({type(exc).__name__})", request_sent=sent
                )
                if self._may_retry_transport(attempt, sent=sent, is_send=is_send):
                    await self._wait(attempt, None)
                    attempt += 1
                    continue
                raise error from exc

            self._remember_rate_limit(response)
            if response.is_success:
                return response
            error = error_from_response(response)
            if self._may_retry_status(attempt, error, is_send=is_send):
                await self._wait(attempt, error.retry_after)
                attempt += 1
                continue
            raise error

    async def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        """`request`, returning the decoded JSON body (None for 202/204 or an empty body)."""
        response = await self.request(method, url, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise KapsoAPIError(
                "Kapso answered with a body that is not JSON", response.status_code
            ) from exc

    async def download(self, url: str) -> bytes:
        """GET a file by absolute URL; the API key goes only to Kapso's own host."""
        own_host = httpx.URL(url).host == httpx.URL(self._base).host
        return (await self.request("GET", url, authenticated=own_host)).content

    # Retry decisions, in one place -------------------------------------------------------
    def _may_retry_transport(self, attempt: int, *, sent: bool, is_send: bool) -> bool:
        if attempt >= self.retry.max_retries:
            return False
        # A send that may have reached Kapso must not be repeated blindly.
        return not (is_send and sent)

    def _may_retry_status(self, attempt: int, error: KapsoAPIError, *, is_send: bool) -> bool:
        if attempt >= self.retry.max_retries:
            return False
        if error.retry_after is not None and error.retry_after > self.retry.max_retry_after:
            return False
        status = error.status_code or 0
        if is_send:
            if status == 429:
                return True
            return isinstance(error, KapsoConflictError) and _IN_FLIGHT_MARKER in (
                error.message.lower()
            )
        return status in _RETRYABLE_READ_STATUSES or isinstance(error, KapsoServerError)

    async def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self.retry.backoff(attempt)
        await self._sleep(delay)

    def _remember_rate_limit(self, response: httpx.Response) -> None:
        remaining = _int_header(response, "X-RateLimit-Remaining")
        limit = _int_header(response, "X-RateLimit-Limit")
        if remaining is not None or limit is not None:
            self.rate_limit = RateLimitState(limit, remaining, time.monotonic())


def _query_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int_header(response: httpx.Response, name: str) -> int | None:
    raw = response.headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def parse_model(model: type[ModelT], data: Any) -> ModelT:
    """Validate a Kapso response into its model; an unexpected shape is a Kapso error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise KapsoAPIError(
            f"Kapso returned an unexpected {model.__name__} shape: {exc.error_count()} error(s)",
            body=data,
        ) from exc


class BaseAPI:
    """One Kapso API domain; subclasses add the endpoints."""

    def __init__(self, http: KapsoHTTP) -> None:
        self._http = http


__all__ = [
    "BaseAPI",
    "KapsoHTTP",
    "RateLimitState",
    "RetryPolicy",
    "parse_model",
]
