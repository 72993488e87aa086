"""Kapso's three error shapes, as exceptions rendered by one handler per shape."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


def fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)


class GraphError(Exception):
    """Meta's Graph envelope, used by the Meta proxy: `{"error": {message, type, code, ...}}`."""

    def __init__(
        self,
        message: str,
        *,
        code: int = 100,
        status_code: int = 400,
        error_subcode: int | None = 2494010,
        details: str | None = None,
        error_type: str = "OAuthException",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.error_subcode = error_subcode
        self.details = details
        self.error_type = error_type

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.error_subcode is not None:
            error["error_subcode"] = self.error_subcode
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = fbtrace_id()
        return {"error": error}


def invalid_parameter(details: str) -> GraphError:
    """Meta's answer to a parameter that breaks a WhatsApp limit."""
    return GraphError("(#100) Invalid parameter", code=100, details=details)


class PlatformError(Exception):
    """Platform and legacy API errors: `{"error": "<string>"}`; also Kapso's flat proxy errors."""

    def __init__(self, status_code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


def _is_proxy(request: Request) -> bool:
    return request.url.path.startswith("/meta/")


def install_error_handlers(app: FastAPI) -> None:
    """Render every error in the shape of the API it happened on."""

    async def graph_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GraphError)
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def platform_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PlatformError)
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else "Invalid request"
        if _is_proxy(request):
            return JSONResponse(invalid_parameter(detail).body(), status_code=400)
        if request.url.path.startswith("/_emulator"):
            return JSONResponse({"error": detail, "errors": exc.errors()}, status_code=422)
        return JSONResponse({"error": detail}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if _is_proxy(request) and exc.status_code in (404, 405):
            # Graph answers unknown paths with its "unsupported request" error.
            err = GraphError(
                f"Unsupported {request.method.lower()} request.",
                code=100,
                error_subcode=33,
                error_type="GraphMethodException",
            )
            return JSONResponse(err.body(), status_code=400)
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    app.add_exception_handler(GraphError, graph_error)
    app.add_exception_handler(PlatformError, platform_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
