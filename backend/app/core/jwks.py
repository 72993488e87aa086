"""The project's asymmetric signing keys, fetched from its JWKS endpoint and cached."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from pydantic import BaseModel

from app.core.errors import AuthKeysUnavailableError

logger = logging.getLogger(__name__)

# The only asymmetric algorithms accepted, each with the one key shape it may be used with.
# Pinning the algorithm to the key (not to the token) is what rules out algorithm confusion.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})

DEFAULT_MIN_REFRESH_INTERVAL_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0


class _JWKSDocument(BaseModel):
    keys: list[dict[str, Any]]


def _pinned_algorithm(jwk: dict[str, Any]) -> str | None:
    """The one algorithm a JWK may verify, or None when we do not accept that key at all."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        algorithm = "RS256"
    elif kty == "EC" and crv == "P-256":
        algorithm = "ES256"
    else:
        # Symmetric ("oct") keys never belong in a public JWKS; other curves/types are not ours.
        return None
    declared = jwk.get("alg")
    if declared is not None and declared != algorithm:
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    return algorithm


def parse_signing_keys(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """Usable signing keys of a JWKS by `kid`; unusable or unnamed keys are skipped, not fatal."""
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in _JWKSDocument.model_validate(document).keys:
        kid = jwk.get("kid")
        algorithm = _pinned_algorithm(jwk)
        if not isinstance(kid, str) or algorithm is None:
            logger.warning("JWKS: skipping key kid=%r kty=%r", kid, jwk.get("kty"))
            continue
        try:
            keys[kid] = jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.PyJWKError as err:
            logger.warning("JWKS: skipping unreadable key kid=%r: %s", kid, err)
    return keys


class JWKSCache:
    """Signing keys by `kid`: fetched lazily, trusted for `cache_seconds`, refetched on an unknown
    `kid` at most once per `min_refresh_interval` so a flood of invented kids cannot hammer the
    endpoint. A failed fetch keeps the keys already known."""

    def __init__(
        self,
        url: str,
        http_client: httpx.AsyncClient,
        *,
        cache_seconds: float = 600.0,
        min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http_client
        self._cache_seconds = cache_seconds
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._last_attempt_at: float | None = None
        # One fetch at a time: concurrent requests with the same new kid share a single refresh.
        self._lock = asyncio.Lock()

    async def get_key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, refreshing the set first if it is stale or lacks that kid."""
        if self._is_fresh() and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if not (self._is_fresh() and kid in self._keys) and self._may_fetch():
                await self._refresh()
        if self._loaded_at is None:
            raise AuthKeysUnavailableError(
                "The signing keys needed to check this token could not be fetched."
            )
        return self._keys.get(kid)

    def _is_fresh(self) -> bool:
        return self._loaded_at is not None and (
            self._clock() - self._loaded_at < self._cache_seconds
        )

    def _may_fetch(self) -> bool:
        return self._last_attempt_at is None or (
            self._clock() - self._last_attempt_at >= self._min_refresh_interval
        )

    async def _refresh(self) -> None:
        self._last_attempt_at = self._clock()
        try:
            response = await self._http.get(self.url, timeout=FETCH_TIMEOUT_SECONDS)
            response.raise_for_status()
            keys = parse_signing_keys(response.json())
        except (httpx.HTTPError, ValueError) as err:  # ValueError: bad JSON or document shape
            # Keep serving the keys we had: an outage of the endpoint must not lock everyone out.
            logger.warning("JWKS fetch from %s failed: %s", self.url, err)
            return
        self._keys = keys
        self._loaded_at = self._clock()
        logger.info("JWKS: loaded %d signing key(s) from %s", len(keys), self.url)
