"""Minting Supabase-like tokens for tests: HS256 with the project secret, RS256/ES256 with
generated keys published as a JWKS, and hand-crafted hostile tokens PyJWT refuses to make."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWT_SECRET = "test-jwt-secret-with-at-least-32-characters"
SUPABASE_URL = "https://project-ref.supabase.test"
JWKS_URL = f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json"
ISSUER = f"{SUPABASE_URL}/auth/v1"
USER_ID = uuid.UUID("6f1c2a4e-8b7d-4e0f-9a3b-2c5d7e9f1a2b")


def user_claims(**overrides: Any) -> dict[str, Any]:
    """A signed-in user's access-token claims, valid for an hour."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(USER_ID),
        "aud": "authenticated",
        "role": "authenticated",
        "email": "ana@example.com",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def service_role_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a Supabase service key: no aud, no sub, the gateway's own issuer."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "supabase", "role": "service_role", "iat": now}
    claims["exp"] = now + 315_360_000
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def hs256(claims: dict[str, Any], secret: str = JWT_SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(data: dict[str, Any]) -> str:
    return _b64url(json.dumps(data, separators=(",", ":")).encode())


def unsigned_token(claims: dict[str, Any], alg: str = "none") -> str:
    """`header.payload.` with an empty signature, as an `alg: none` attack sends it."""
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(claims)}."


def hmac_token(claims: dict[str, Any], key: bytes, **headers: Any) -> str:
    """HS256 over arbitrary key bytes (PyJWT refuses a PEM as an HMAC secret; attackers don't)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', **headers})}.{_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class AsymmetricKey:
    """A private signing key, its `kid`, and the public JWK a JWKS would publish for it."""

    algorithm: str
    kid: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims,
            self.private_key,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **headers},
        )


def rsa_key(kid: str = "rsa-key-1") -> AsymmetricKey:
    return AsymmetricKey(
        "RS256", kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


def ec_key(kid: str = "ec-key-1") -> AsymmetricKey:
    return AsymmetricKey("ES256", kid, ec.generate_private_key(ec.SECP256R1()))


def jwks(*keys: AsymmetricKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}
