"""Bearer-token authentication: the verifier with real keys, the JWKS cache, the dependencies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx
from fastapi import FastAPI

from app.core.errors import (
    AuthenticationError,
    AuthErrorCode,
    AuthKeysUnavailableError,
    install_error_handlers,
)
from app.core.jwks import JWKSCache
from app.core.jwt_verifier import AuthenticatedPrincipal, JWTVerifier, jwks_url_from_settings
from app.core.security import CurrentPrincipal, ServicePrincipal, bearer_token
from app.core.settings import ConfigurationError, Settings
from support.jwt_tokens import (
    ISSUER,
    JWKS_URL,
    JWT_SECRET,
    SUPABASE_URL,
    USER_ID,
    AsymmetricKey,
    ec_key,
    hmac_token,
    hs256,
    jwks,
    rsa_key,
    service_role_claims,
    unsigned_token,
    user_claims,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def rsa() -> AsymmetricKey:
    return rsa_key()


@pytest.fixture(scope="module")
def ec() -> AsymmetricKey:
    return ec_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_route(rsa: AsymmetricKey, ec: AsymmetricKey) -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router.get(JWKS_URL).respond(200, json=jwks(rsa, ec))


@pytest.fixture
async def http_client(jwks_route: respx.Route) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def jwks_cache(http_client: httpx.AsyncClient, clock: FakeClock) -> JWKSCache:
    return JWKSCache(JWKS_URL, http_client, cache_seconds=600, clock=clock)


@pytest.fixture
def verifier(jwks_cache: JWKSCache) -> JWTVerifier:
    return JWTVerifier(secret=JWT_SECRET, jwks=jwks_cache, leeway_seconds=30)


async def refused(verifier: JWTVerifier, token: str) -> AuthErrorCode:
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(token)
    assert info.value.status_code == 401
    return info.value.auth_code


# --- HS256 with the project secret ----------------------------------------------------------


async def test_valid_user_token_gives_the_user(verifier: JWTVerifier) -> None:
    principal = await verifier.verify(hs256(user_claims()))
    assert principal.user_id == USER_ID
    assert principal.role == "authenticated"
    assert not principal.is_service_role
    assert principal.email == "ana@example.com"
    assert principal.claims["aud"] == "authenticated"


async def test_principal_is_frozen(verifier: JWTVerifier) -> None:
    principal = await verifier.verify(hs256(user_claims()))
    with pytest.raises(ValueError, match="frozen"):
        principal.role = "service_role"  # type: ignore[misc]


async def test_service_role_key_without_aud_or_sub_is_accepted(verifier: JWTVerifier) -> None:
    principal = await verifier.verify(hs256(service_role_claims()))
    assert principal.is_service_role
    assert principal.user_id is None


async def test_service_role_key_signed_with_another_secret_is_refused(
    verifier: JWTVerifier,
) -> None:
    token = hs256(service_role_claims(), secret="another-secret-of-at-least-32-characters")
    assert await refused(verifier, token) is AuthErrorCode.INVALID_SIGNATURE


async def test_service_role_key_naming_another_audience_is_refused(verifier: JWTVerifier) -> None:
    token = hs256(service_role_claims(aud="elsewhere"))
    assert await refused(verifier, token) is AuthErrorCode.INVALID_AUDIENCE


async def test_expired_token_is_refused(verifier: JWTVerifier) -> None:
    token = hs256(user_claims(exp=int(time.time()) - 120))
    assert await refused(verifier, token) is AuthErrorCode.EXPIRED_TOKEN


async def test_expiry_within_leeway_is_tolerated(verifier: JWTVerifier) -> None:
    principal = await verifier.verify(hs256(user_claims(exp=int(time.time()) - 5)))
    assert principal.user_id == USER_ID


async def test_token_without_expiry_is_refused(verifier: JWTVerifier) -> None:
    token = hs256({k: v for k, v in user_claims().items() if k != "exp"})
    assert await refused(verifier, token) is AuthErrorCode.INVALID_CLAIMS


@pytest.mark.parametrize(
    "aud", ["anon", "authenticated-but-not-quite", ["anon", "other"], None], ids=repr
)
async def test_wrong_or_missing_audience_is_refused(verifier: JWTVerifier, aud: Any) -> None:
    claims = user_claims()
    claims.pop("aud")
    if aud is not None:
        claims["aud"] = aud
    assert await refused(verifier, hs256(claims)) is AuthErrorCode.INVALID_AUDIENCE


async def test_audience_list_naming_authenticated_is_accepted(verifier: JWTVerifier) -> None:
    principal = await verifier.verify(hs256(user_claims(aud=["other", "authenticated"])))
    assert principal.user_id == USER_ID


async def test_anon_key_is_refused(verifier: JWTVerifier) -> None:
    anon_key = hs256({"iss": "supabase", "role": "anon", "exp": int(time.time()) + 60})
    assert await refused(verifier, anon_key) is AuthErrorCode.INVALID_AUDIENCE


async def test_other_role_with_right_audience_is_refused(verifier: JWTVerifier) -> None:
    token = hs256(user_claims(role="anon"))
    assert await refused(verifier, token) is AuthErrorCode.INVALID_ROLE


@pytest.mark.parametrize("sub", ["not-a-uuid", None, 42], ids=repr)
async def test_user_token_needs_a_uuid_subject(verifier: JWTVerifier, sub: Any) -> None:
    claims = user_claims()
    claims.pop("sub")
    if sub is not None:
        claims["sub"] = sub
    assert await refused(verifier, hs256(claims)) is AuthErrorCode.INVALID_CLAIMS


async def test_wrong_secret_is_refused(verifier: JWTVerifier) -> None:
    token = hs256(user_claims(), secret="not-the-project-secret-but-32-chars-long")
    assert await refused(verifier, token) is AuthErrorCode.INVALID_SIGNATURE


async def test_tampered_payload_is_refused(verifier: JWTVerifier) -> None:
    header, _, signature = hs256(user_claims()).split(".")
    forged = hs256(user_claims(sub=str(uuid.uuid4()))).split(".")[1]
    token = f"{header}.{forged}.{signature}"
    assert await refused(verifier, token) is AuthErrorCode.INVALID_SIGNATURE


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "..", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", "x" * 9000],
    ids=["word", "three-parts", "empty-parts", "bad-base64-payload", "huge"],
)
async def test_garbage_is_malformed(verifier: JWTVerifier, token: str) -> None:
    assert await refused(verifier, token) is AuthErrorCode.MALFORMED_TOKEN


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(verifier: JWTVerifier, alg: str) -> None:
    token = unsigned_token(user_claims(), alg=alg)
    assert await refused(verifier, token) is AuthErrorCode.UNSUPPORTED_ALGORITHM


async def test_other_hmac_algorithms_are_refused(verifier: JWTVerifier) -> None:
    token = jwt.encode(user_claims(), JWT_SECRET * 2, algorithm="HS512")
    assert await refused(verifier, token) is AuthErrorCode.UNSUPPORTED_ALGORITHM


async def test_hs256_is_refused_when_no_secret_is_configured(jwks_cache: JWKSCache) -> None:
    verifier = JWTVerifier(secret=None, jwks=jwks_cache)
    token = hs256(user_claims())
    assert await refused(verifier, token) is AuthErrorCode.UNSUPPORTED_ALGORITHM


async def test_issuer_is_checked_when_configured(jwks_cache: JWKSCache) -> None:
    verifier = JWTVerifier(secret=JWT_SECRET, jwks=jwks_cache, issuer=ISSUER)
    assert (await verifier.verify(hs256(user_claims()))).user_id == USER_ID
    wrong = hs256(user_claims(iss="https://other.supabase.co/auth/v1"))
    assert await refused(verifier, wrong) is AuthErrorCode.INVALID_ISSUER
    missing = hs256({k: v for k, v in user_claims().items() if k != "iss"})
    assert await refused(verifier, missing) is AuthErrorCode.INVALID_ISSUER
    # The service key is signed by the project but carries the gateway's iss, not the Auth one.
    assert (await verifier.verify(hs256(service_role_claims()))).is_service_role


async def test_issuer_is_not_checked_when_not_configured(verifier: JWTVerifier) -> None:
    token = hs256(user_claims(iss="https://anyone.example/auth/v1"))
    assert (await verifier.verify(token)).user_id == USER_ID


def test_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="32"):
        JWTVerifier(secret="x" * 31)


# --- Asymmetric keys from the JWKS ----------------------------------------------------------


async def test_rs256_token_is_verified_with_the_jwks(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route
) -> None:
    principal = await verifier.verify(rsa.sign(user_claims()))
    assert principal.user_id == USER_ID
    assert jwks_route.call_count == 1


async def test_es256_token_is_verified_with_the_jwks(
    verifier: JWTVerifier, ec: AsymmetricKey
) -> None:
    principal = await verifier.verify(ec.sign(user_claims()))
    assert principal.user_id == USER_ID


async def test_rs256_token_signed_by_a_key_not_in_the_jwks_is_refused(
    verifier: JWTVerifier, rsa: AsymmetricKey
) -> None:
    impostor = rsa_key(kid=rsa.kid)  # same kid, different key
    token = impostor.sign(user_claims())
    assert await refused(verifier, token) is AuthErrorCode.INVALID_SIGNATURE


async def test_asymmetric_tokens_get_the_same_claim_checks(
    verifier: JWTVerifier, ec: AsymmetricKey
) -> None:
    expired = ec.sign(user_claims(exp=int(time.time()) - 120))
    assert await refused(verifier, expired) is AuthErrorCode.EXPIRED_TOKEN
    wrong_audience = ec.sign(user_claims(aud="anon"))
    assert await refused(verifier, wrong_audience) is AuthErrorCode.INVALID_AUDIENCE


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        # No secret: HS256 is not an accepted algorithm at all.
        (None, AuthErrorCode.UNSUPPORTED_ALGORITHM),
        # A secret: HS256 is checked against it alone, never against the RSA key.
        (JWT_SECRET, AuthErrorCode.INVALID_SIGNATURE),
    ],
    ids=["rs256-only", "with-hs256-secret"],
)
async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    jwks_cache: JWKSCache, rsa: AsymmetricKey, secret: str | None, expected: AuthErrorCode
) -> None:
    """The classic confusion attack: HMAC keyed with the public PEM, naming the RSA key's kid."""
    verifier = JWTVerifier(secret=secret, jwks=jwks_cache)
    await verifier.verify(rsa.sign(user_claims()))  # the RSA key is loaded and trusted
    for key in (rsa.public_pem, rsa.public_pem.strip()):
        token = hmac_token(user_claims(), key, kid=rsa.kid)
        assert await refused(verifier, token) is expected


async def test_algorithm_must_match_the_key_type(
    verifier: JWTVerifier, rsa: AsymmetricKey, ec: AsymmetricKey
) -> None:
    # An ES256 signature presented as from the RSA key, and an RS256 one naming the EC key.
    assert (
        await refused(verifier, ec.sign(user_claims(), kid=rsa.kid))
        is AuthErrorCode.UNSUPPORTED_ALGORITHM
    )
    assert (
        await refused(verifier, rsa.sign(user_claims(), kid=ec.kid))
        is AuthErrorCode.UNSUPPORTED_ALGORITHM
    )


async def test_asymmetric_token_without_kid_is_refused(
    verifier: JWTVerifier, rsa: AsymmetricKey
) -> None:
    token = jwt.encode(user_claims(), rsa.private_key, algorithm="RS256")
    assert await refused(verifier, token) is AuthErrorCode.UNKNOWN_KEY


async def test_asymmetric_token_is_refused_without_a_jwks(rsa: AsymmetricKey) -> None:
    verifier = JWTVerifier(secret=JWT_SECRET, jwks=None)
    assert await refused(verifier, rsa.sign(user_claims())) is AuthErrorCode.UNSUPPORTED_ALGORITHM


async def test_symmetric_keys_in_a_jwks_are_never_used(
    http_client: httpx.AsyncClient, jwks_route: respx.Route, rsa: AsymmetricKey
) -> None:
    oct_key = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ"}
    jwks_route.respond(200, json={"keys": [oct_key, rsa.public_jwk]})
    verifier = JWTVerifier(secret=None, jwks=JWKSCache(JWKS_URL, http_client))
    token = hmac_token(user_claims(), b"secret-secret-secret-secret-1234", kid="shared")
    assert await refused(verifier, token) is AuthErrorCode.UNSUPPORTED_ALGORITHM
    # ...and the same kid under an asymmetric alg finds no usable key.
    forged = rsa.sign(user_claims(), kid="shared")
    assert await refused(verifier, forged) is AuthErrorCode.UNKNOWN_KEY


# --- The JWKS cache -------------------------------------------------------------------------


async def test_jwks_is_cached(
    verifier: JWTVerifier, rsa: AsymmetricKey, ec: AsymmetricKey, jwks_route: respx.Route
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    await verifier.verify(ec.sign(user_claims()))
    await verifier.verify(rsa.sign(user_claims()))
    assert jwks_route.call_count == 1
    # HS256 tokens never touch the JWKS at all.
    await verifier.verify(hs256(user_claims()))
    assert jwks_route.call_count == 1


async def test_jwks_is_fetched_again_after_its_ttl(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route, clock: FakeClock
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    clock.advance(599)
    await verifier.verify(rsa.sign(user_claims()))
    assert jwks_route.call_count == 1
    clock.advance(2)
    await verifier.verify(rsa.sign(user_claims()))
    assert jwks_route.call_count == 2


async def test_unknown_kid_refreshes_once_then_is_refused(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route, clock: FakeClock
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    assert jwks_route.call_count == 1
    clock.advance(60)  # well inside the TTL, past the refresh rate limit
    stranger = rsa_key(kid="never-published")
    assert await refused(verifier, stranger.sign(user_claims())) is AuthErrorCode.UNKNOWN_KEY
    assert jwks_route.call_count == 2


async def test_refresh_on_unknown_kid_is_rate_limited(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route, clock: FakeClock
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    for attempt in range(20):
        token = rsa_key(kid=f"random-{attempt}").sign(user_claims())
        assert await refused(verifier, token) is AuthErrorCode.UNKNOWN_KEY
    # The first unknown kid arrived at once after the initial load, inside the 30 s window.
    assert jwks_route.call_count == 1
    clock.advance(30)
    token = rsa_key(kid="after-the-window").sign(user_claims())
    assert await refused(verifier, token) is AuthErrorCode.UNKNOWN_KEY
    assert jwks_route.call_count == 2
    assert await refused(verifier, token) is AuthErrorCode.UNKNOWN_KEY
    assert jwks_route.call_count == 2


async def test_rotated_in_key_is_found_by_the_refresh(
    verifier: JWTVerifier,
    rsa: AsymmetricKey,
    ec: AsymmetricKey,
    jwks_route: respx.Route,
    clock: FakeClock,
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    rotated = ec_key(kid="ec-key-2")
    jwks_route.respond(200, json=jwks(rsa, ec, rotated))
    clock.advance(31)
    principal = await verifier.verify(rotated.sign(user_claims()))
    assert principal.user_id == USER_ID
    assert jwks_route.call_count == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route
) -> None:
    tokens = [rsa.sign(user_claims()) for _ in range(10)]
    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert all(principal.user_id == USER_ID for principal in principals)
    assert jwks_route.call_count == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"no": "keys"}),
    ],
    ids=["server-error", "not-json", "wrong-shape"],
)
async def test_unreachable_jwks_without_known_keys_is_503(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route, response: httpx.Response
) -> None:
    jwks_route.return_value = response
    with pytest.raises(AuthKeysUnavailableError) as info:
        await verifier.verify(rsa.sign(user_claims()))
    assert info.value.status_code == 503


async def test_failed_refresh_keeps_the_known_keys(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route, clock: FakeClock
) -> None:
    await verifier.verify(rsa.sign(user_claims()))
    jwks_route.side_effect = httpx.ConnectError("down")
    clock.advance(3600)
    principal = await verifier.verify(rsa.sign(user_claims()))
    assert principal.user_id == USER_ID
    assert jwks_route.call_count == 2


async def test_empty_jwks_of_a_legacy_project_refuses_asymmetric_tokens(
    verifier: JWTVerifier, rsa: AsymmetricKey, jwks_route: respx.Route
) -> None:
    jwks_route.respond(200, json={"keys": []})
    assert await refused(verifier, rsa.sign(user_claims())) is AuthErrorCode.UNKNOWN_KEY


# --- Construction from settings -------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_jwks_url_is_derived_from_the_supabase_url() -> None:
    assert jwks_url_from_settings(settings(supabase_url=SUPABASE_URL + "/")) == JWKS_URL
    override = "https://keys.example/jwks.json"
    assert jwks_url_from_settings(
        settings(supabase_url=SUPABASE_URL, supabase_jwks_url=override)
    ) == (override)
    assert jwks_url_from_settings(settings()) is None


async def test_from_settings_verifies_with_the_configured_secret_and_jwks(
    http_client: httpx.AsyncClient, rsa: AsymmetricKey
) -> None:
    verifier = JWTVerifier.from_settings(
        settings(
            supabase_url=SUPABASE_URL, supabase_jwt_secret=JWT_SECRET, supabase_jwt_issuer=ISSUER
        ),
        http_client,
    )
    assert (await verifier.verify(hs256(user_claims()))).user_id == USER_ID
    assert (await verifier.verify(rsa.sign(user_claims()))).user_id == USER_ID
    wrong_issuer = hs256(user_claims(iss="https://other/auth/v1"))
    assert await refused(verifier, wrong_issuer) is AuthErrorCode.INVALID_ISSUER


async def test_from_settings_with_an_empty_secret_accepts_no_hs256(
    http_client: httpx.AsyncClient,
) -> None:
    verifier = JWTVerifier.from_settings(settings(supabase_jwt_secret=""), http_client)
    assert await refused(verifier, hs256(user_claims())) is AuthErrorCode.UNSUPPORTED_ALGORITHM


def test_from_settings_refuses_a_short_secret(http_client: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigurationError):
        JWTVerifier.from_settings(settings(supabase_jwt_secret="short"), http_client)


# --- The FastAPI dependencies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER   abc.def.ghi  ", "abc.def.ghi"),
    ],
)
def test_bearer_token_scheme_is_case_insensitive(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.fixture
async def api(verifier: JWTVerifier) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.state.jwt_verifier = verifier

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str | None]:
        return {"user_id": str(principal.user_id), "role": principal.role}

    @app.get("/admin")
    async def admin(principal: ServicePrincipal) -> dict[str, bool]:
        return {"service": principal.is_service_role}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_dependency_gives_the_route_its_principal(api: httpx.AsyncClient) -> None:
    response = await api.get("/me", headers={"Authorization": f"Bearer {hs256(user_claims())}"})
    assert response.status_code == 200
    assert response.json() == {"user_id": str(USER_ID), "role": "authenticated"}


async def test_missing_token_is_401_with_a_bare_challenge(api: httpx.AsyncClient) -> None:
    response = await api.get("/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="fizko"'
    assert response.json()["error"]["code"] == "missing_token"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("Bearer", "malformed_token"),
        ("Bearer ", "malformed_token"),
        ("Bearer two tokens", "malformed_token"),
        ("Bearer garbage", "malformed_token"),
    ],
)
async def test_unusable_authorization_headers_are_401(
    api: httpx.AsyncClient, authorization: str, code: str
) -> None:
    response = await api.get("/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_expired_token_is_401_with_an_invalid_token_challenge(
    api: httpx.AsyncClient,
) -> None:
    token = hs256(user_claims(exp=int(time.time()) - 120))
    response = await api.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "expired_token", "message": "The token has expired."}
    }
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="The token has expired."'
    )


async def test_challenge_never_echoes_quotes_from_the_token(api: httpx.AsyncClient) -> None:
    token = unsigned_token(user_claims(), alg='x", evil="1')
    response = await api.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.count('"') == 4


async def test_service_route_is_403_for_a_user(api: httpx.AsyncClient) -> None:
    response = await api.get("/admin", headers={"Authorization": f"Bearer {hs256(user_claims())}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_service_route_accepts_the_service_key(api: httpx.AsyncClient) -> None:
    token = hs256(service_role_claims())
    response = await api.get("/admin", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"service": True}


async def test_service_route_is_401_without_a_token(api: httpx.AsyncClient) -> None:
    response = await api.get("/admin")
    assert response.status_code == 401


async def test_openapi_documents_the_bearer_scheme(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/me"]["get"]["security"] == [{"HTTPBearer": []}]


def test_principal_model_round_trips() -> None:
    principal = AuthenticatedPrincipal(user_id=USER_ID, role="service_role", claims={})
    assert principal.is_service_role
    assert principal.email is None
