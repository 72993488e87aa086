"""`WhatsAppService`: the web app's sends and inbox views, scoped to the caller's companies."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from app.core.clock import Clock, utc_now
from app.core.errors import (
    AppError,
    ConflictError,
    NotFoundError,
    UnprocessableError,
    UpstreamTimeoutError,
)
from app.core.jwt_verifier import AuthenticatedPrincipal
from app.integrations.kapso import (
    ButtonsMessage,
    KapsoClient,
    KapsoConnectionError,
    KapsoError,
    ListMessage,
    ListRow,
    ListSection,
    ReplyButton,
    SendResult,
    TemplateButtonParameter,
)
from app.integrations.kapso.models import CUSTOMER_SERVICE_WINDOW
from app.repositories.models import (
    ACCEPTED_OUTBOUND_STATUSES,
    Conversation,
    Message,
    MessageRole,
    NewOutboundMessage,
    OutboundMessage,
    OutboundStatus,
)
from app.repositories.stores import Stores
from app.services.whatsapp.access import ConversationAccess, SendTarget
from app.services.whatsapp.conversation_manager import WhatsAppConversationManager
from app.services.whatsapp.kapso_errors import (
    OUTSIDE_WINDOW_HINT,
    app_error_from_code,
    app_error_from_kapso,
)
from app.services.whatsapp.outbound import PURPOSE_API
from app.services.whatsapp.rate_limit import SendRateLimiter
from app.services.whatsapp.send_requests import (
    ConversationSelector,
    SendInteractiveRequest,
    SendMediaRequest,
    SendResponse,
    SendTemplateRequest,
    SendTextRequest,
    StrictBody,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Send:
    """One send request, reduced to what every kind has in common."""

    kind: str
    request: StrictBody
    whatsapp_config_id: str | None
    stored_content: str
    free_form: bool
    call: Callable[[str, str | None, str], Awaitable[SendResult]]


class WhatsAppService:
    """High-level wrapper the routes call: authorise, validate, send once, store."""

    def __init__(
        self,
        *,
        stores: Stores,
        kapso: KapsoClient,
        conversations: WhatsAppConversationManager,
        access: ConversationAccess,
        rate_limiter: SendRateLimiter,
        clock: Clock = utc_now,
    ) -> None:
        self._db = stores.database
        self._outbound = stores.outbound
        self._messages = stores.conversations
        self._directory = stores.directory
        self._kapso = kapso
        self._conversations = conversations
        self._access = access
        self._rate_limiter = rate_limiter
        self._clock = clock

    # Sends ------------------------------------------------------------------------------
    async def send_text(
        self, principal: AuthenticatedPrincipal, body: SendTextRequest, idempotency_key: str | None
    ) -> SendResponse:
        async def call(to: str, business: str | None, ref: str) -> SendResult:
            return await self._kapso.messages.send_text(
                message=body.content,
                to=to,
                phone_number_id=business,
                preview_url=body.preview_url,
                callback_data=ref,
            )

        send = _Send("text", body, body.whatsapp_config_id, body.content, True, call)
        return await self._send(principal, body.conversation_selector, send, idempotency_key)

    async def send_media(
        self, principal: AuthenticatedPrincipal, body: SendMediaRequest, idempotency_key: str | None
    ) -> SendResponse:
        async def call(to: str, business: str | None, ref: str) -> SendResult:
            return await self._kapso.messages.send_media(
                media_type=body.message_type,
                media_url=str(body.file_url),
                caption=body.caption,
                filename=body.filename,
                to=to,
                phone_number_id=business,
                callback_data=ref,
            )

        stored = body.caption or f"[{body.message_type}: {body.filename or body.file_url}]"
        send = _Send(body.message_type, body, body.whatsapp_config_id, stored, True, call)
        return await self._send(principal, body.conversation_selector, send, idempotency_key)

    async def send_interactive(
        self,
        principal: AuthenticatedPrincipal,
        body: SendInteractiveRequest,
        idempotency_key: str | None,
    ) -> SendResponse:
        interactive: ButtonsMessage | ListMessage
        if body.interactive_type == "button":
            interactive = ButtonsMessage(
                body=body.body_text,
                header=body.header_text,
                footer=body.footer_text,
                buttons=[ReplyButton(id=b.id, title=b.title) for b in body.buttons or []],
            )
        else:
            interactive = ListMessage(
                body=body.body_text,
                header=body.header_text,
                footer=body.footer_text,
                button_text=body.list_button_text or "",
                sections=[
                    ListSection(
                        title=section.title,
                        rows=[
                            ListRow(id=r.id, title=r.title, description=r.description)
                            for r in section.rows
                        ],
                    )
                    for section in body.sections or []
                ],
            )

        async def call(to: str, business: str | None, ref: str) -> SendResult:
            return await self._kapso.messages.send_interactive(
                interactive=interactive, to=to, phone_number_id=business, callback_data=ref
            )

        send = _Send("interactive", body, body.whatsapp_config_id, body.body_text, True, call)
        return await self._send(principal, body.conversation_selector, send, idempotency_key)

    async def send_template(
        self,
        principal: AuthenticatedPrincipal,
        body: SendTemplateRequest,
        idempotency_key: str | None,
    ) -> SendResponse:
        parameters = body.parameters

        async def call(to: str, business: str | None, ref: str) -> SendResult:
            return await self._kapso.messages.send_template(
                template_name=body.template_name,
                language_code=body.language_code,
                header_parameters=parameters.header,
                body_parameters=parameters.body,
                button_parameters=[
                    TemplateButtonParameter(index=b.index, sub_type=b.sub_type, value=b.value)
                    for b in parameters.buttons
                ],
                to=to,
                phone_number_id=business,
                callback_data=ref,
            )

        # Kept in the conversation so the assistant has the context when the user answers.
        stored = f"[template {body.template_name}] {_parameters_text(body)}".strip()
        send = _Send("template", body, body.whatsapp_config_id, stored, False, call)
        return await self._send(principal, body.selector, send, idempotency_key)

    async def _send(
        self,
        principal: AuthenticatedPrincipal,
        selector: ConversationSelector,
        send: _Send,
        idempotency_key: str | None,
    ) -> SendResponse:
        send.request.check()
        caller = str(principal.user_id) if principal.user_id else principal.role
        self._rate_limiter.check(caller)
        fingerprint = _fingerprint(send)
        if idempotency_key is not None:
            earlier = await self._outbound.find_outbound_by_idempotency_key(
                idempotency_key, user_id=principal.user_id
            )
            if earlier is not None:
                return _replay(earlier, fingerprint)
        target = await self._access.target(principal, selector, send.whatsapp_config_id)
        if send.free_form:
            await self._require_open_window(target)
        # The record and its first attempt in one transaction: a crash after it shows a send
        # may have left.
        async with self._db.transaction() as tx:
            recorded = await self._outbound.record_outbound(
                NewOutboundMessage(
                    to_phone=target.phone,
                    message_type=send.kind,
                    purpose=PURPOSE_API,
                    content=send.stored_content,
                    conversation_id=target.conversation.id if target.conversation else None,
                    kapso_conversation_id=target.kapso_conversation_id,
                    company_id=target.company_id,
                    user_id=principal.user_id,
                    business_phone_number_id=target.business_phone_number_id,
                    idempotency_key=idempotency_key,
                    request_fingerprint=fingerprint,
                ),
                tx=tx,
            )
            if not recorded.created:
                # The same key arrived concurrently: one request sends, the other replays.
                return _replay(recorded.message, fingerprint)
            row = await self._outbound.mark_outbound_attempt(recorded.message.id, tx=tx)
        try:
            result = await send.call(target.phone, target.business_phone_number_id, str(row.id))
        except KapsoError as exc:
            error = app_error_from_kapso(exc)
            await self._record_failure(row, exc, error)
            raise error from exc
        # One transaction: the status with its wamid, and the conversation's copy.
        async with self._db.transaction() as tx:
            change = await self._outbound.advance_outbound_status(
                row.id, OutboundStatus.SENT, wamid=result.wamid, tx=tx
            )
            accepted = change is not None and change.message.status in ACCEPTED_OUTBOUND_STATUSES
            if target.conversation is not None and accepted:
                await self._messages.append_message(
                    self._conversations.outbound_message(
                        target.conversation.id,
                        content=send.stored_content,
                        wamid=result.wamid,
                        message_type=send.kind,
                        outbound_id=row.id,
                        sender_user_id=principal.user_id,
                    ),
                    tx=tx,
                )
        return SendResponse(
            message_id=result.wamid,
            conversation_id=target.kapso_conversation_id,
            status=OutboundStatus.SENT.value,
        )

    async def _require_open_window(self, target: SendTarget) -> None:
        """Free-form messages only within 24 h of the user's last message; else 409."""
        last: Message | None = None
        if target.conversation is not None:
            last = await self._messages.latest_message(
                target.conversation.id, role=MessageRole.USER
            )
        if last is None or self._clock() - last.created_at >= CUSTOMER_SERVICE_WINDOW:
            raise ConflictError(OUTSIDE_WINDOW_HINT, code="outside_customer_service_window")

    async def _record_failure(self, row: OutboundMessage, exc: KapsoError, error: AppError) -> None:
        """Keep the answer the caller got, so a retry with the same key gets it again."""
        unknown = isinstance(exc, KapsoConnectionError) and exc.request_sent
        await self._outbound.advance_outbound_status(
            row.id,
            OutboundStatus.UNKNOWN if unknown else OutboundStatus.FAILED,
            error_code=error.code,
            error_message=error.message[:500],
        )

    # Inbox views ------------------------------------------------------------------------
    async def list_conversations(
        self,
        principal: AuthenticatedPrincipal,
        *,
        company_id: UUID | None,
        limit: int,
        offset: int,
    ) -> list[Conversation]:
        """WhatsApp conversations of one of the caller's companies (their active one by
        default)."""
        allowed = await self._access.company_ids(principal)
        if company_id is None:
            if principal.user_id is None:
                raise UnprocessableError("company_id is required", field="company_id")
            active = await self._directory.get_active_company(principal.user_id)
            if active is None:
                return []
            company_id = active.id
        if allowed is not None and company_id not in allowed:
            raise NotFoundError("No such company", code="company_not_found")
        return await self._messages.list_company_conversations(
            company_id, limit=limit, offset=offset
        )

    async def list_messages(
        self,
        principal: AuthenticatedPrincipal,
        kapso_conversation_id: str,
        *,
        limit: int,
        offset: int,
    ) -> tuple[Conversation, list[Message]]:
        conversation = await self._access.conversation(principal, kapso_conversation_id)
        messages = await self._messages.list_messages(conversation.id, limit=limit, offset=offset)
        return conversation, messages


def _fingerprint(send: _Send) -> str:
    canonical = f"{send.kind}:{send.request.model_dump_json()}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(earlier: OutboundMessage, fingerprint: str) -> SendResponse:
    """The first answer for an Idempotency-Key, without sending again."""
    if earlier.request_fingerprint not in (None, fingerprint):
        raise ConflictError(
            "This Idempotency-Key was used for a different request",
            code="idempotency_key_reused",
        )
    if earlier.status in ACCEPTED_OUTBOUND_STATUSES and earlier.wamid:
        return SendResponse(
            message_id=earlier.wamid,
            conversation_id=earlier.kapso_conversation_id,
            status=OutboundStatus.SENT.value,
        )
    if earlier.status is OutboundStatus.UNKNOWN:
        raise UpstreamTimeoutError(
            "The first request with this Idempotency-Key timed out; its outcome is settled "
            "by Kapso's status webhooks"
        )
    if earlier.status is OutboundStatus.FAILED:
        raise app_error_from_code(earlier.error_code, earlier.error_message)
    raise ConflictError(
        "A request with this Idempotency-Key is still in progress", code="request_in_progress"
    )


def _parameters_text(body: SendTemplateRequest) -> str:
    values = body.parameters.body
    if values is None:
        return ""
    items = values.values() if isinstance(values, dict) else values
    return " ".join(items)
