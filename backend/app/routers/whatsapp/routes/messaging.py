"""`/api/whatsapp/send/*` and the inbox views: JWT-protected, scoped to the caller's companies."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query

from app.core.security import CurrentPrincipal
from app.routers.whatsapp.dependencies import ContainerDep
from app.routers.whatsapp.schemas import (
    AUTH_ERRORS,
    SEND_ERRORS,
    ConversationList,
    ConversationView,
    MessageList,
    MessageView,
    PageOffset,
    error_responses,
)
from app.services.whatsapp.send_requests import (
    SendInteractiveRequest,
    SendMediaRequest,
    SendResponse,
    SendTemplateRequest,
    SendTextRequest,
)

router = APIRouter(tags=["messaging"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Repeat a request with the same key to get the first result without "
        "sending again.",
    ),
]
# Without it, OpenAPI would document FastAPI's own 422 shape for the inbox views' queries.
INVALID_PAGE = (422, "validation_error", "Input should be less than or equal to 100", "query.limit")
FREE_FORM_ERRORS = error_responses(**SEND_ERRORS)
TEMPLATE_ERRORS = error_responses(
    **{name: case for name, case in SEND_ERRORS.items() if name != "window_closed"}
)


@router.post("/send/text", response_model=SendResponse, responses=FREE_FORM_ERRORS)
async def send_text(
    body: SendTextRequest,
    principal: CurrentPrincipal,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> SendResponse:
    """Send a text message (within the 24-hour window)."""
    return await container.whatsapp.send_text(principal, body, idempotency_key)


@router.post("/send/media", response_model=SendResponse, responses=FREE_FORM_ERRORS)
async def send_media(
    body: SendMediaRequest,
    principal: CurrentPrincipal,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> SendResponse:
    """Send an image, video, audio or document by URL (within the 24-hour window)."""
    return await container.whatsapp.send_media(principal, body, idempotency_key)


@router.post("/send/interactive", response_model=SendResponse, responses=FREE_FORM_ERRORS)
async def send_interactive(
    body: SendInteractiveRequest,
    principal: CurrentPrincipal,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> SendResponse:
    """Send reply buttons or a list (within the 24-hour window)."""
    return await container.whatsapp.send_interactive(principal, body, idempotency_key)


@router.post("/send/template", response_model=SendResponse, responses=TEMPLATE_ERRORS)
async def send_template(
    body: SendTemplateRequest,
    principal: CurrentPrincipal,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> SendResponse:
    """Send an approved template: the only kind allowed outside the 24-hour window."""
    return await container.whatsapp.send_template(principal, body, idempotency_key)


@router.get(
    "/conversations",
    response_model=ConversationList,
    responses=error_responses(
        **AUTH_ERRORS,
        company_not_found=(404, "company_not_found", "No such company", None),
        invalid_page=INVALID_PAGE,
    ),
)
async def list_conversations(
    principal: CurrentPrincipal,
    container: ContainerDep,
    company_id: Annotated[
        UUID | None, Query(description="One of your companies; default: the active one.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: PageOffset = 0,
) -> ConversationList:
    """Your company's WhatsApp conversations, most recently active first."""
    conversations = await container.whatsapp.list_conversations(
        principal, company_id=company_id, limit=limit, offset=offset
    )
    return ConversationList(
        data=[ConversationView.from_conversation(c) for c in conversations],
        limit=limit,
        offset=offset,
    )


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=MessageList,
    responses=error_responses(
        **AUTH_ERRORS,
        not_found=(404, "conversation_not_found", "No such conversation or recipient", None),
        invalid_page=INVALID_PAGE,
    ),
)
async def list_messages(
    conversation_id: Annotated[str, Path(min_length=1, max_length=200)],
    principal: CurrentPrincipal,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: PageOffset = 0,
) -> MessageList:
    """A conversation's messages, oldest first (`conversation_id` is Kapso's id)."""
    conversation, messages = await container.whatsapp.list_messages(
        principal, conversation_id, limit=limit, offset=offset
    )
    return MessageList(
        conversation=ConversationView.from_conversation(conversation),
        data=[MessageView.from_message(m) for m in messages],
        limit=limit,
        offset=offset,
    )
