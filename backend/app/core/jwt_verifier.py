"""Verification of Supabase access tokens in the app, with no call to Supabase Auth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from uuid import UUID

import httpx
import jwt
from pydantic import BaseModel, ConfigDict

from app.core.errors import AuthenticationError, AuthErrorCode
from app.core.jwks import ASYMMETRIC_ALGORITHMS, JWKSCache
from app.core.settings import ConfigurationError, Settings

AUTHENTICATED_AUDIENCE = "authenticated"
SERVICE_ROLE = "service_role"
MIN_SECRET_LENGTH = 32
# Supabase tokens are well under 2 KB; refusing huge ones early bounds the work per request.
MAX_TOKEN_LENGTH = 8192

Role = Literal["authenticated", "service_role"]


class AuthenticatedPrincipal(BaseModel):
    """Who a verified token speaks for."""

    model_config = ConfigDict(frozen=True)

    user_id: UUID | None
    role: Role
    email: str | None = None
    claims: Mapping[str, Any]

    @property
    def is_service_role(self) -> bool:
        """The backend's own key, which may act for any company."""
        return self.role == SERVICE_ROLE


def jwks_url_from_settings(settings: Settings) -> str | None:
    """SUPABASE_JWKS_URL, else the project's standard JWKS path, else None (no asymmetric keys)."""
    if settings.supabase_jwks_url:
        return settings.supabase_jwks_url
    if settings.supabase_url:
        return settings.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
    return None


class JWTVerifier:
    """Checks a bearer token's signature and claims and returns its principal.

    The key is chosen from the token header's `alg` (+ `kid`) and must be of the one type that
    algorithm allows: HS256 only with the shared secret, RS256 only with RSA JWKs, ES256 only with
    P-256 EC JWKs. `jwt.decode` is always given exactly that one algorithm.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JWKSCache | None = None,
        issuer: str | None = None,
        leeway_seconds: float = 30.0,
    ) -> None:
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"SUPABASE_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters long"
            )
        self._secret = secret
        self._jwks = jwks
        self._issuer = issuer
        self._leeway = leeway_seconds

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient) -> JWTVerifier:
        """The process's verifier; `http_client` (owned by the caller) fetches the JWKS."""
        configured = settings.supabase_jwt_secret
        secret = configured.get_secret_value() if configured else ""
        jwks_url = jwks_url_from_settings(settings)
        jwks = (
            JWKSCache(jwks_url, http_client, cache_seconds=settings.jwks_cache_seconds)
            if jwks_url
            else None
        )
        return cls(
            # An empty variable (as in .env.example) means "no HS256 secret", not a short one.
            secret=secret or None,
            jwks=jwks,
            issuer=settings.supabase_jwt_issuer or None,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    async def verify(self, token: str) -> AuthenticatedPrincipal:
        """The principal of a valid token; raises AuthenticationError (401) otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError(AuthErrorCode.MALFORMED_TOKEN, "The token is too long.")
        header = _unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise _unsupported(algorithm)
        key = await self._key_for(algorithm, header.get("kid"))
        claims = self._decode(token, key, algorithm)
        return self._principal(claims)

    async def _key_for(self, algorithm: str, kid: object) -> str | jwt.PyJWK:
        if algorithm == "HS256":
            if self._secret is None:
                raise _unsupported(algorithm)
            return self._secret
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise _unsupported(algorithm)  # "none", HS512, PS256, EdDSA, ...
        if self._jwks is None:
            raise _unsupported(algorithm)
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError(AuthErrorCode.UNKNOWN_KEY, "The token names no signing key.")
        key = await self._jwks.get_key(kid)
        if key is None:
            raise AuthenticationError(
                AuthErrorCode.UNKNOWN_KEY, "The token was signed with an unknown key."
            )
        if key.algorithm_name != algorithm:
            # e.g. an RS256 header naming an EC key: the key decides, never the token.
            raise AuthenticationError(
                AuthErrorCode.UNSUPPORTED_ALGORITHM,
                f"The token's algorithm does not match its key ({key.algorithm_name}).",
            )
        return key

    def _decode(self, token: str, key: str | jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                # aud and iss depend on the role, so they are checked below, after the signature.
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthenticationError(
                AuthErrorCode.EXPIRED_TOKEN, "The token has expired."
            ) from err
        except jwt.InvalidSignatureError as err:
            raise AuthenticationError(
                AuthErrorCode.INVALID_SIGNATURE, "The token's signature is invalid."
            ) from err
        except jwt.InvalidAlgorithmError as err:
            raise _unsupported(algorithm) from err
        except jwt.MissingRequiredClaimError as err:
            raise AuthenticationError(
                AuthErrorCode.INVALID_CLAIMS, f"The token has no '{err.claim}' claim."
            ) from err
        except jwt.DecodeError as err:
            raise AuthenticationError(
                AuthErrorCode.MALFORMED_TOKEN, "The token is not a well-formed JWT."
            ) from err
        except jwt.InvalidTokenError as err:
            # Immature (nbf/iat in the future), non-string sub, and other claim failures.
            raise AuthenticationError(
                AuthErrorCode.INVALID_CLAIMS, "The token's claims are invalid."
            ) from err

    def _principal(self, claims: dict[str, Any]) -> AuthenticatedPrincipal:
        role = claims.get("role")
        is_service = role == SERVICE_ROLE
        audience = claims.get("aud")
        # Supabase's service key carries no aud (nor the Auth server's iss): it is trusted for
        # being signed with the project's keys. If it does name an audience, that must be ours.
        audience_checked = audience is not None or not is_service
        if audience_checked and not _names_audience(audience, AUTHENTICATED_AUDIENCE):
            raise AuthenticationError(
                AuthErrorCode.INVALID_AUDIENCE, "The token is not meant for this service."
            )
        if not is_service and role != AUTHENTICATED_AUDIENCE:
            raise AuthenticationError(
                AuthErrorCode.INVALID_ROLE, "The token's role may not use this service."
            )
        if self._issuer is not None and not is_service and claims.get("iss") != self._issuer:
            raise AuthenticationError(
                AuthErrorCode.INVALID_ISSUER, "The token was issued by someone else."
            )
        user_id = _user_id(claims.get("sub"), required=not is_service)
        email = claims.get("email")
        return AuthenticatedPrincipal(
            user_id=user_id,
            role=SERVICE_ROLE if is_service else "authenticated",
            email=email if isinstance(email, str) and email else None,
            claims=claims,
        )


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as err:
        raise AuthenticationError(
            AuthErrorCode.MALFORMED_TOKEN, "The token is not a well-formed JWT."
        ) from err
    return header


def _unsupported(algorithm: object) -> AuthenticationError:
    return AuthenticationError(
        AuthErrorCode.UNSUPPORTED_ALGORITHM,
        f"Tokens signed with {algorithm!s:.20} are not accepted.",
    )


def _names_audience(audience: object, expected: str) -> bool:
    if isinstance(audience, str):
        return audience == expected
    if isinstance(audience, list):
        return expected in audience
    return False


def _user_id(subject: object, *, required: bool) -> UUID | None:
    """`sub` as a UUID; a user token must have one, a service token may have none."""
    if subject is None and not required:
        return None
    if isinstance(subject, str):
        try:
            return UUID(subject)
        except ValueError:
            pass
    raise AuthenticationError(AuthErrorCode.INVALID_CLAIMS, "The token's subject is not a user id.")
