"""`/api/whatsapp/admin/events`: the inbox seen by an operator (service_role key only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from app.core.security import ServicePrincipal
from app.repositories.models import InboxState
from app.routers.whatsapp.dependencies import ContainerDep
from app.routers.whatsapp.schemas import (
    ErrorResponse,
    InboxEventList,
    InboxEventView,
    PageOffset,
)

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or invalid bearer token."},
        403: {"model": ErrorResponse, "description": "Not the service_role key."},
    },
)


@router.get("/events", response_model=InboxEventList)
async def list_events(
    _: ServicePrincipal,
    container: ContainerDep,
    status: Annotated[InboxState, Query(description="pending, processing, done or dead")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: PageOffset = 0,
) -> InboxEventList:
    """Inbox events in a state, newest first (e.g. `status=dead`: what needs attention)."""
    events = await container.inbox_admin.list_events(status, limit=limit, offset=offset)
    return InboxEventList(data=[InboxEventView.from_event(e) for e in events])


@router.post(
    "/events/{event_id}/replay",
    response_model=InboxEventView,
    responses={
        404: {"model": ErrorResponse, "description": "No such event."},
        409: {"model": ErrorResponse, "description": "The event is not dead."},
    },
)
async def replay_event(
    event_id: UUID, _: ServicePrincipal, container: ContainerDep
) -> InboxEventView:
    """Re-queue a dead event: it is processed again from its first step (effects run once)."""
    event = await container.inbox_admin.replay(event_id)
    container.worker.wake()
    return InboxEventView.from_event(event)
