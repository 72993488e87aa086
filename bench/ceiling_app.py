"""The ceiling: a bare FastAPI endpoint at the webhook's path that reads the body and says 200.

Served by the same uvicorn configuration as the service (bench.common.UVICORN_ARGS) under the
same load, it is what this machine, Python, uvicorn and FastAPI can do before our code runs.
"""

from __future__ import annotations

from fastapi import FastAPI, Request


def create_app() -> FastAPI:
    app = FastAPI(title="Benchmark ceiling")

    @app.post("/api/whatsapp/webhook")
    async def receive(request: Request) -> dict[str, int]:
        await request.body()
        return {"received": 1, "accepted": 1, "duplicates": 0}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
