"""The /api/whatsapp routes, assembled from their route modules."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route

from app.routers.whatsapp.routes import admin, messaging, webhooks

PREFIX = "/api/whatsapp"


def include_whatsapp_routes(app: FastAPI) -> None:
    """Add the routes to the app itself, each router one level deep: every level of nested
    routers costs each request another routing pass (the webhook route is the hottest)."""
    # Kapso's deliveries are served by a plain Starlette route, matched first: the endpoint
    # takes only the request, so FastAPI's request handler (dependency solving, per-request
    # telemetry checks) would add about a fifth of the request's CPU for nothing. The FastAPI
    # route below it documents the same endpoint in OpenAPI and is never reached.
    app.router.routes.insert(
        0,
        Route(
            PREFIX + webhooks.WEBHOOK_PATH,
            webhooks.receive_webhook,
            methods=["POST"],
            include_in_schema=False,
        ),
    )
    for router in (webhooks.router, messaging.router, admin.router):
        app.include_router(router, prefix=PREFIX)
