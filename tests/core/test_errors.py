"""The one error shape: AppError subclasses and request validation failures, rendered once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import AppError, install_error_handlers
from app.repositories.errors import StoreUnavailableError


class Button(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=20)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    buttons: list[Button]


class TeapotError(AppError):
    status_code = 418
    code = "teapot"


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app, unavailable=(StoreUnavailableError,))

    @app.post("/buttons")
    async def buttons(body: Body, limit: int = 10) -> dict[str, int]:
        return {"count": len(body.buttons)}

    @app.get("/store-down")
    async def store_down() -> None:
        raise StoreUnavailableError("connection refused to 10.0.0.5:5432")

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    @app.get("/teapot")
    async def teapot() -> None:
        raise TeapotError("I am a teapot.", field="kettle", headers={"X-Brew": "tea"})

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_app_error_renders_its_status_code_field_and_headers(api: httpx.AsyncClient) -> None:
    response = await api.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {
        "error": {"code": "teapot", "message": "I am a teapot.", "field": "kettle"}
    }
    assert response.headers["X-Brew"] == "tea"


async def test_body_validation_names_the_dotted_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/buttons", json={"buttons": [{"title": "ok"}, {"title": "x" * 21}]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["field"] == "buttons.1.title"
    assert error["message"]


async def test_unknown_body_fields_are_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/buttons", json={"buttons": [], "company_id": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "company_id"


async def test_query_validation_keeps_its_location(api: httpx.AsyncClient) -> None:
    response = await api.post("/buttons?limit=many", json={"buttons": []})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "query.limit"


def test_code_can_be_set_per_instance() -> None:
    error = AppError("Nope.", code="nope")
    assert error.code == "nope"
    assert error.to_body() == {"error": {"code": "nope", "message": "Nope."}}
    assert AppError("Boom.").status_code == 500


async def test_an_unavailable_store_is_503_with_retry_after_and_no_internals(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/store-down")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "store_unavailable"
    assert "10.0.0.5" not in response.text


async def test_an_unexpected_error_is_500_in_the_one_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/bug")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "Internal server error"}
    }


async def test_malformed_json_is_400_naming_no_field(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/buttons", content=b'{"buttons": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert "field" not in error
