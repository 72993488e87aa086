"""Bearer tokens on the send API over real HTTP: every refusal is a 401 with a challenge, the
project's keys (HS256 secret and a JWKS) are accepted, and the service_role key may act for
any company."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from support.asgi_server import serve
from support.e2e import (
    JWT_SECRET,
    SEND_API,
    LocalFlow,
    api_sends,
    assert_error,
    bearer,
    local_flow,
    open_window,
)
from support.jwt_tokens import (
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
from support.store_data import make_member

pytestmark = pytest.mark.timeout(120)


@dataclass
class KeyedFlow:
    """A flow whose service also trusts the keys of a JWKS served next to it."""

    flow: LocalFlow
    rsa: AsymmetricKey
    ec: AsymmetricKey
    jwks_fetches: list[float]


@pytest.fixture
async def keyed(database_url: str) -> AsyncIterator[KeyedFlow]:
    rsa, ec = rsa_key("rsa-2026"), ec_key("ec-2026")
    fetches: list[float] = []

    async def document(_: Request) -> JSONResponse:
        fetches.append(time.monotonic())
        return JSONResponse(jwks(rsa, ec))

    jwks_app = Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", document)])
    async with serve(jwks_app) as jwks_base:
        jwks_url = f"{jwks_base}/auth/v1/.well-known/jwks.json"
        async with local_flow(database_url, supabase_jwks_url=jwks_url) as flow:
            yield KeyedFlow(flow, rsa, ec, fetches)


def _expired(user_id: uuid.UUID, _: KeyedFlow) -> str:
    past = int(time.time()) - 3600
    return hs256(user_claims(sub=str(user_id), iat=past - 3600, exp=past), JWT_SECRET)


def _wrong_audience(user_id: uuid.UUID, _: KeyedFlow) -> str:
    return hs256(user_claims(sub=str(user_id), aud="some-other-api"), JWT_SECRET)


def _wrong_secret(user_id: uuid.UUID, _: KeyedFlow) -> str:
    return hs256(user_claims(sub=str(user_id)), "another-projects-secret-0123456789abcdef")


def _alg_none(user_id: uuid.UUID, _: KeyedFlow) -> str:
    return unsigned_token(user_claims(sub=str(user_id)))


def _hs256_with_the_rsa_public_key(user_id: uuid.UUID, keys: KeyedFlow) -> str:
    # The classic confusion: the public key (which anyone has) used as an HMAC secret.
    return hmac_token(user_claims(sub=str(user_id)), keys.rsa.public_pem, kid=keys.rsa.kid)


def _unknown_kid(user_id: uuid.UUID, _: KeyedFlow) -> str:
    return rsa_key("rotated-away").sign(user_claims(sub=str(user_id)))


def _known_kid_other_key(user_id: uuid.UUID, keys: KeyedFlow) -> str:
    return rsa_key(keys.rsa.kid).sign(user_claims(sub=str(user_id)))


def _rs256_header_on_the_ec_key(user_id: uuid.UUID, keys: KeyedFlow) -> str:
    return rsa_key(keys.ec.kid).sign(user_claims(sub=str(user_id)))


def _anon_role(user_id: uuid.UUID, _: KeyedFlow) -> str:
    return hs256(user_claims(sub=str(user_id), role="anon"), JWT_SECRET)


def _subject_not_a_user(_: uuid.UUID, __: KeyedFlow) -> str:
    return hs256(user_claims(sub="ana@example.com"), JWT_SECRET)


TokenFactory = Callable[[uuid.UUID, KeyedFlow], str]

# name: (Authorization header, or a token factory; the 401's code)
REFUSED: dict[str, tuple[str | TokenFactory | None, str]] = {
    "no-token": (None, "missing_token"),
    "empty-header": ("", "missing_token"),
    "basic-scheme": ("Basic YW5hOnNlY3JldA==", "missing_token"),
    "bearer-without-token": ("Bearer", "malformed_token"),
    "garbage": ("Bearer not-a-jwt", "malformed_token"),
    "three-garbage-segments": ("Bearer a.b.c", "malformed_token"),
    "huge": ("Bearer " + "a" * 9000, "malformed_token"),
    "expired": (_expired, "expired_token"),
    "wrong-audience": (_wrong_audience, "invalid_audience"),
    "wrong-secret": (_wrong_secret, "invalid_signature"),
    "alg-none": (_alg_none, "unsupported_algorithm"),
    "hs256-signed-with-rs256-public-key": (_hs256_with_the_rsa_public_key, "invalid_signature"),
    "unknown-kid": (_unknown_kid, "unknown_key"),
    "known-kid-other-key": (_known_kid_other_key, "invalid_signature"),
    "rs256-header-on-ec-key": (_rs256_header_on_the_ec_key, "unsupported_algorithm"),
    "anon-role": (_anon_role, "invalid_role"),
    "subject-not-a-user": (_subject_not_a_user, "invalid_claims"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_every_refused_token_is_401_with_a_bearer_challenge(
    keyed: KeyedFlow, case: str
) -> None:
    flow = keyed.flow
    profile, _ = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    credential, code = REFUSED[case]
    if callable(credential):
        credential = f"Bearer {credential(profile.id, keyed)}"
    headers = {} if credential is None else {"Authorization": credential}

    send = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"conversation_id": conversation_id}, "content": "x"},
        headers=headers,
    )
    inbox = await flow.service.get("/api/whatsapp/conversations", headers=headers)

    for response in (send, inbox):
        assert_error(response, 401, code)
        challenge = response.headers["WWW-Authenticate"]
        if code == "missing_token":
            assert challenge == 'Bearer realm="fizko"'
        else:
            assert challenge.startswith('Bearer error="invalid_token", error_description="')
    await flow.drain_deliveries()
    assert await api_sends(flow, profile.phone, expected=1, wait_seconds=0.5) == []


@pytest.mark.parametrize("signer", ["hs256-secret", "rs256-jwks", "es256-jwks"])
async def test_tokens_signed_with_the_projects_keys_are_accepted(
    keyed: KeyedFlow, signer: str
) -> None:
    flow = keyed.flow
    profile, company = await make_member(flow.seeder)
    assert profile.phone is not None
    conversation_id = await open_window(flow, profile.phone)
    claims = user_claims(sub=str(profile.id))
    token = {
        "hs256-secret": lambda: hs256(claims, JWT_SECRET),
        "rs256-jwks": lambda: keyed.rsa.sign(claims),
        "es256-jwks": lambda: keyed.ec.sign(claims),
    }[signer]()
    headers = {"Authorization": f"Bearer {token}"}

    inbox = await flow.service.get("/api/whatsapp/conversations", headers=headers)
    send = await flow.service.post(
        f"{SEND_API}/text",
        json={"conversation_selector": {"conversation_id": conversation_id}, "content": signer},
        headers=headers,
    )

    assert inbox.status_code == 200, inbox.text
    assert [c["company_id"] for c in inbox.json()["data"]] == [str(company.id)]
    assert send.status_code == 200, send.text
    [sent] = await api_sends(flow, profile.phone, expected=1)
    assert sent["request"]["text"] == {"body": signer}


async def test_an_unknown_kid_fetches_the_jwks_at_most_once_per_interval(
    keyed: KeyedFlow,
) -> None:
    flow = keyed.flow
    profile, _ = await make_member(flow.seeder)
    known = keyed.rsa.sign(user_claims(sub=str(profile.id)))
    assert (
        await flow.service.get(
            "/api/whatsapp/conversations", headers={"Authorization": f"Bearer {known}"}
        )
    ).status_code == 200
    fetched = len(keyed.jwks_fetches)

    for index in range(5):
        invented = rsa_key(f"invented-{index}").sign(user_claims(sub=str(profile.id)))
        response = await flow.service.get(
            "/api/whatsapp/conversations", headers={"Authorization": f"Bearer {invented}"}
        )
        assert_error(response, 401, "unknown_key")

    # A flood of invented kids must not turn into a flood of JWKS fetches.
    assert len(keyed.jwks_fetches) - fetched <= 1


async def test_the_service_role_key_may_send_into_any_companys_conversation(
    database_url: str,
) -> None:
    async with local_flow(database_url) as flow:
        ana, _ = await make_member(flow.seeder)
        pedro, _ = await make_member(flow.seeder, company_name="Otra SpA")
        assert ana.phone is not None
        assert pedro.phone is not None
        service = {"Authorization": f"Bearer {hs256(service_role_claims(), JWT_SECRET)}"}
        targets = [(ana.phone, await open_window(flow, ana.phone))]
        targets.append((pedro.phone, await open_window(flow, pedro.phone)))

        for phone, conversation_id in targets:
            response = await flow.service.post(
                f"{SEND_API}/text",
                json={
                    "conversation_selector": {"conversation_id": conversation_id},
                    "content": "Aviso de Fizko",
                },
                headers=service,
            )
            assert response.status_code == 200, response.text
            assert response.json()["conversation_id"] == conversation_id
            [sent] = await api_sends(flow, phone, expected=1)
            outbound = await flow.stores.outbound.find_outbound_by_wamid(sent["message_id"])
            assert outbound is not None
            assert outbound.user_id is None

        # A user token for Ana's company still cannot reach Pedro's conversation.
        refused = await flow.service.post(
            f"{SEND_API}/text",
            json={
                "conversation_selector": {"conversation_id": targets[1][1]},
                "content": "x",
            },
            headers=bearer(ana.id),
        )
        assert_error(refused, 404, "conversation_not_found")
