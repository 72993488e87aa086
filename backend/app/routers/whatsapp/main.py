"""The /api/whatsapp routes, assembled from their route modules."""

from __future__ import annotations

from fastapi import FastAPI

from app.routers.whatsapp.routes import admin, messaging, webhooks

PREFIX = "/api/whatsapp"


def include_whatsapp_routes(app: FastAPI) -> None:
    """Add the routes to the app itself, each router one level deep: every level of nested
    routers costs each request another routing pass (the webhook route is the hottest)."""
    for router in (webhooks.router, messaging.router, admin.router):
        app.include_router(router, prefix=PREFIX)
