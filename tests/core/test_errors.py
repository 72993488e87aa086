"""The one error shape: AppError subclasses and request validation failures, rendered once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import AppError, install_error_handlers


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
    install_error_handlers(app)

    @app.post("/buttons")
    async def buttons(body: Body, limit: int = 10) -> dict[str, int]:
        return {"count": len(body.buttons)}

    @app.get("/teapot")
    async def teapot() -> None:
        raise TeapotError("I am a teapot.", field="kettle", headers={"X-Brew": "tea"})

    transport = httpx.ASGITransport(app=app)
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
