"""The /api/whatsapp router, assembled from its route modules."""

from __future__ import annotations

from fastapi import APIRouter

from app.routers.whatsapp.routes import admin, messaging, webhooks

router = APIRouter(prefix="/api/whatsapp")
router.include_router(webhooks.router)
router.include_router(messaging.router)
router.include_router(admin.router)
