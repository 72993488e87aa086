"""FastAPI dependencies that turn `Authorization: Bearer <token>` into a verified principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.errors import AuthenticationError, AuthErrorCode, ForbiddenError
from app.core.jwt_verifier import AuthenticatedPrincipal, JWTVerifier

# Declared only so OpenAPI documents the bearer scheme; the header is parsed below, because
# HTTPBearer(auto_error=False) cannot tell a missing token from a malformed one.
_bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A Supabase access token (or the service_role key).",
)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value; raises 401 otherwise."""
    if authorization is None or not authorization.strip():
        raise AuthenticationError(AuthErrorCode.MISSING_TOKEN, "A bearer token is required.")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 §3.1: another scheme counts as no bearer credentials at all.
        raise AuthenticationError(
            AuthErrorCode.MISSING_TOKEN, "The Authorization header must use the Bearer scheme."
        )
    token = token.strip()
    if not token or any(char.isspace() for char in token):
        raise AuthenticationError(AuthErrorCode.MALFORMED_TOKEN, "The bearer token is malformed.")
    return token


def _verifier(request: Request) -> JWTVerifier:
    verifier = getattr(request.app.state, "jwt_verifier", None)
    if not isinstance(verifier, JWTVerifier):
        raise RuntimeError("app.state.jwt_verifier is not set: build it in the app's lifespan")
    return verifier


async def get_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> AuthenticatedPrincipal:
    """The caller's verified principal; 401 with a `WWW-Authenticate` challenge otherwise."""
    token = bearer_token(request.headers.get("Authorization"))
    return await _verifier(request).verify(token)


CurrentPrincipal = Annotated[AuthenticatedPrincipal, Depends(get_principal)]


async def require_service_role(principal: CurrentPrincipal) -> AuthenticatedPrincipal:
    """The principal, only if it is the service_role key; 403 for a user token."""
    if not principal.is_service_role:
        raise ForbiddenError("This operation requires the service_role key.")
    return principal


ServicePrincipal = Annotated[AuthenticatedPrincipal, Depends(require_service_role)]
