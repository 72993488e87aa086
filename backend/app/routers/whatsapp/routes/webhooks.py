"""`POST /api/whatsapp/webhook`: Kapso's deliveries, HMAC-verified (no JWT)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.core.request_body import read_body_limited
from app.routers.whatsapp.dependencies import get_container
from app.routers.whatsapp.schemas import ErrorResponse, WebhookAck, webhook_ack_json

router = APIRouter(tags=["webhooks"])

WEBHOOK_PATH = "/webhook"


@router.post(
    WEBHOOK_PATH,
    response_model=WebhookAck,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not a Kapso delivery."},
        401: {"model": ErrorResponse, "description": "Missing or wrong X-Webhook-Signature."},
        413: {"model": ErrorResponse, "description": "The body is over the size limit."},
        503: {"model": ErrorResponse, "description": "Not recorded; Kapso will retry."},
    },
)
async def receive_webhook(request: Request) -> Response:
    """Record Kapso's events durably and answer at once; a worker processes them."""
    # The same lookup as `ContainerDep`, called directly: solving it as a FastAPI dependency
    # cost about 8% of this route's CPU (it is the hottest route).
    container = await get_container(request)
    raw_body = await read_body_limited(request, container.settings.webhook_max_body_bytes)
    summary = await container.ingest.ingest(raw_body, request.headers)
    # A Response is sent as it is: FastAPI skips response_model validation and serialisation
    # (`response_model` stays for the OpenAPI document; the body is WebhookAck's JSON).
    return Response(
        webhook_ack_json(summary.received, summary.accepted, summary.duplicates),
        media_type="application/json",
    )
