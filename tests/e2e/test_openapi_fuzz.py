"""The app's OpenAPI document, and a schemathesis fuzz run over it against a running flow (real
HTTP, a valid bearer token): no generated request, valid or not, gets a 5xx, and every error
has the one error shape."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from support.e2e import (
    JWT_SECRET,
    SEND_API,
    bearer,
    local_flow,
    open_window,
)
from support.jwt_tokens import hs256, service_role_claims
from support.store_data import make_member

pytestmark = pytest.mark.timeout(120)

SEND_ENDPOINTS = ["text", "media", "interactive", "template"]
SEND_ERROR_STATUSES = ["401", "404", "409", "422", "429", "502", "503", "504"]
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
# Per operation and generation mode; the whole run stays well under a minute.
EXAMPLES_PER_OPERATION = 25
# uvicorn's own answer to bytes that are not HTTP (e.g. a control character in the query
# string): the request never reaches the app, so it cannot answer in its error shape.
INVALID_HTTP = "Invalid HTTP request received."


async def test_openapi_documents_every_send_error_with_examples(
    database_url: str,
) -> None:
    async with local_flow(database_url) as flow:
        document = (await flow.service.get("/openapi.json")).json()

    paths = document["paths"]
    for endpoint in SEND_ENDPOINTS:
        operation = paths[f"{SEND_API}/{endpoint}"]["post"]
        responses = operation["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SendResponse"
        }
        for status in SEND_ERROR_STATUSES:
            content = responses[status]["content"]["application/json"]
            assert content["schema"] == ERROR_SCHEMA, (endpoint, status)
            examples = content["examples"]
            assert examples, (endpoint, status)
            for example in examples.values():
                error = example["value"]["error"]
                assert set(error) <= {"code", "message", "field"}
                assert error["code"]
                assert error["message"]
        idempotency = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert idempotency
        assert idempotency[0]["in"] == "header"
        assert operation["security"] == [{"HTTPBearer": []}]
    window_codes = {
        example["value"]["error"]["code"]
        for example in paths[f"{SEND_API}/text"]["post"]["responses"]["409"]["content"][
            "application/json"
        ]["examples"].values()
    }
    assert window_codes == {"outside_customer_service_window", "idempotency_key_reused"}
    # Only free-form sends can be refused for the window.
    template_409 = paths[f"{SEND_API}/template"]["post"]["responses"]["409"]
    assert "window_closed" not in template_409["content"]["application/json"]["examples"]
    # The inbox views document their errors in the one shape too (not FastAPI's own 422).
    for path in [
        "/api/whatsapp/conversations",
        "/api/whatsapp/conversations/{conversation_id}/messages",
    ]:
        for status, response in paths[path]["get"]["responses"].items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == ERROR_SCHEMA
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@dataclass
class FuzzReport:
    """What the fuzz run saw: status counts per operation, and what it must not see."""

    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(self, label: str, status: int) -> None:
        self.counts[(label, status)] = self.counts.get((label, status), 0) + 1


def _error_shape_problem(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return "not {error: ...}"
    error = body["error"]
    if not isinstance(error, dict) or not {"code", "message"} <= set(error):
        return "error without code or message"
    if not set(error) <= {"code", "message", "field"}:
        return "error with other keys"
    return None


@dataclass(frozen=True)
class FuzzTarget:
    """Where the fuzz run sends, as whom, and the caller's real conversation."""

    base_url: str
    user: dict[str, str]
    service: dict[str, str]
    conversation_id: str


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    target: FuzzTarget,
    session: requests.Session,
    report: FuzzReport,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    # The admin endpoints take the service_role key; everything else a user's token.
    headers = target.service if "/admin/" in operation.path else target.user

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), steer=st.booleans())
    def run(case: Any, steer: bool) -> None:
        # Half the time, point at the caller's real conversation to get past the 404 and into
        # the window check, the store and the emulator.
        if steer and "conversation_id" in (case.path_parameters or {}):
            case.path_parameters["conversation_id"] = target.conversation_id
        body = case.body
        if steer and isinstance(body, dict) and isinstance(body.get("conversation_selector"), dict):
            body["conversation_selector"] = {"conversation_id": target.conversation_id}
        response = case.call(base_url=target.base_url, headers=headers, session=session)
        report.record(label, response.status_code)
        problem = None
        if response.status_code >= 500:
            problem = "a server error"
        elif response.status_code >= 400 and response.text != INVALID_HTTP:
            problem = _error_shape_problem(response)
        if problem is not None:
            report.problems.append(
                f"{label} → {response.status_code} ({problem}): {response.text[:300]}\n"
                f"    reproduce: {case.as_curl_command(headers=headers)}"
            )

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (e.g. GET /health takes no input).
        assert mode is GenerationMode.NEGATIVE, label


def _fuzz(target: FuzzTarget) -> FuzzReport:
    """Run in a thread: schemathesis' transport is synchronous, the servers share the loop."""
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json")
    report = FuzzReport()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(result.ok(), mode, target, session, report)
    return report


async def test_fuzzing_the_openapi_spec_finds_no_server_error(database_url: str) -> None:
    # A generous send limit, so generated sends get past the limiter and into the flow.
    async with local_flow(database_url, send_rate_limit_per_minute=100_000) as flow:
        profile, _ = await make_member(flow.seeder)
        assert profile.phone is not None
        conversation_id = await open_window(flow, profile.phone)
        service = {"Authorization": f"Bearer {hs256(service_role_claims(), JWT_SECRET)}"}

        target = FuzzTarget(flow.service_url, bearer(profile.id), service, conversation_id)
        report = await asyncio.to_thread(_fuzz, target)

    assert not report.problems, "\n".join(report.problems)
    labels = {label for label, _ in report.counts}
    assert {f"POST {SEND_API}/{endpoint}" for endpoint in SEND_ENDPOINTS} <= labels
    # The run reached real sends, not only refusals.
    assert report.counts.get((f"POST {SEND_API}/text", 200), 0) > 0, report.counts
