"""`WhatsAppRepository` on Supabase's data API (PostgREST) with the official async client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

import httpx
from postgrest import APIError
from postgrest.base_request_builder import APIResponse, SingleAPIResponse
from postgrest.types import JSON
from pydantic import BaseModel, ValidationError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from app.core.phone import try_normalize_phone
from app.repositories.errors import StoreConstraintError, StoreError, StoreUnavailableError
from app.repositories.group_commit import GroupCommit
from app.repositories.models import (
    Company,
    Conversation,
    ConversationResult,
    ConversationStatus,
    InboundWithReplies,
    InboxEvent,
    InboxLease,
    InboxRecordResult,
    InboxState,
    Message,
    MessageAppendResult,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    OutboundMessage,
    OutboundRecordResult,
    OutboundStatus,
    OutboundStatusChange,
    Profile,
    SentRecord,
    UserSession,
    WhatsAppConversationMetadata,
)

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Executable(Protocol):
    """What every PostgREST query builder offers: `await builder.execute()`."""

    async def execute(self) -> APIResponse | SingleAPIResponse: ...


WHATSAPP = "whatsapp"

# SQLSTATE classes and PostgREST codes that mean "try again later" rather than "bad request":
# connection failures, shutdowns, resource exhaustion, serialization/deadlock, timeouts.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "40")
_TRANSIENT_POSTGREST_CODES = {"PGRST000", "PGRST001", "PGRST002", "57014"}


def store_error_from_api_error(err: APIError) -> StoreError:
    """The one place that maps a data API error to a store error."""
    code = err.code or ""
    text = f"{code}: {err.message or 'data API error'}"
    if code.isdigit() and len(code) == 3:
        # Not PostgREST's JSON: the gateway answered with an HTTP status (502, 503, 504...).
        status = int(code)
        if status >= 500 or status in (408, 429):
            return StoreUnavailableError(text)
        return StoreError(text)
    if code in _TRANSIENT_POSTGREST_CODES or code.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
        return StoreUnavailableError(text)
    if code.startswith(("23", "22")):
        return StoreConstraintError(text)
    return StoreError(text)


class SupabaseWhatsAppRepository:
    """Service-role access to the Fizko tables and this service's own, through PostgREST."""

    def __init__(self, client: AsyncClient, http_client: httpx.AsyncClient | None = None) -> None:
        """Wrap a service-role client; `http_client`, when given, is owned and closed here."""
        self._client = client
        self._http = http_client
        # Concurrent webhook deliveries share one `whatsapp_inbox_record` call (group commit):
        # one HTTP request and one transaction for many, instead of one each.
        # One write at a time: batches commit in the order their events were numbered, so a
        # claim never sees a conversation's newer event before an older one still being written
        # (two writers measured no better: bench/README.md).
        self._inbox_writes = GroupCommit(self._record_inbox_batch)

    @classmethod
    async def connect(
        cls, url: str, service_role_key: str, *, timeout_seconds: float = 10.0
    ) -> SupabaseWhatsAppRepository:
        """Build the client once per process; it reuses its HTTP connections."""
        # Our own httpx client: timeouts and pooling set in one place (passing `timeout` to
        # supabase-py is deprecated). Retries are off: the callers (worker, API) decide.
        http_client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            follow_redirects=True,
        )
        options = AsyncClientOptions(
            httpx_client=http_client,
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            client = await acreate_client(url, service_role_key, options=options)
        except Exception:
            await http_client.aclose()
            raise
        return cls(client, http_client)

    @property
    def backend_name(self) -> str:
        return "supabase"

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # --- plumbing ---------------------------------------------------------------------------

    async def _execute(self, query: _Executable) -> JSON:
        try:
            response = await query.execute()
        except APIError as err:
            raise store_error_from_api_error(err) from err
        except httpx.TransportError as err:
            raise StoreUnavailableError(f"data API unreachable: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise StoreError(f"data API request failed: {type(err).__name__}") from err
        return response.data

    async def _rows(self, query: _Executable, model: type[ModelT]) -> list[ModelT]:
        data = await self._execute(query)
        if not isinstance(data, list):
            raise StoreError(f"expected rows from the store, got {type(data).__name__}")
        return [_parse(model, item) for item in data]

    async def _first(self, query: _Executable, model: type[ModelT]) -> ModelT | None:
        rows = await self._rows(query, model)
        return rows[0] if rows else None

    async def _one_json(self, query: _Executable, model: type[ModelT]) -> ModelT | None:
        data = await self._execute(query)
        if data is None:
            return None
        return _parse(model, data)

    async def ping(self) -> None:
        await self._execute(self._client.table("whatsapp_inbox_events").select("id").limit(1))

    # --- users and companies ----------------------------------------------------------------

    async def create_profile(
        self,
        *,
        phone: str | None,
        full_name: str | None = None,
        email: str | None = None,
        profile_id: UUID | None = None,
    ) -> Profile:
        row: dict[str, JSON] = {"phone": phone, "full_name": full_name, "email": email}
        if profile_id is not None:
            row["id"] = str(profile_id)
        rows = await self._rows(self._client.table("profiles").insert(row), Profile)
        return _single(rows, "profile")

    async def get_profile(self, user_id: UUID) -> Profile | None:
        query = self._client.table("profiles").select("*").eq("id", str(user_id)).limit(1)
        return await self._first(query, Profile)

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        query = (
            self._client.table("profiles")
            .select("*")
            .eq("phone_e164", e164)
            .order("phone_verified", desc=True)
            .order("created_at", desc=True)
            .limit(1)
        )
        return await self._first(query, Profile)

    async def create_company(
        self, *, business_name: str, rut: str | None = None, trade_name: str | None = None
    ) -> Company:
        row: dict[str, JSON] = {
            "business_name": business_name,
            "rut": rut,
            "trade_name": trade_name,
        }
        rows = await self._rows(self._client.table("companies").insert(row), Company)
        return _single(rows, "company")

    async def create_session(
        self,
        *,
        user_id: UUID,
        company_id: UUID,
        is_active: bool = True,
        last_accessed_at: datetime | None = None,
    ) -> UserSession:
        row: dict[str, JSON] = {
            "user_id": str(user_id),
            "company_id": str(company_id),
            "is_active": is_active,
            "last_accessed_at": last_accessed_at.isoformat() if last_accessed_at else None,
        }
        rows = await self._rows(self._client.table("sessions").insert(row), UserSession)
        return _single(rows, "session")

    async def get_active_company(self, user_id: UUID) -> Company | None:
        query = (
            self._client.table("sessions")
            .select("company:companies(*)")
            .eq("user_id", str(user_id))
            .eq("is_active", True)
            .order("last_accessed_at", desc=True, nullsfirst=False)
            .order("created_at", desc=True)
            .limit(1)
        )
        rows = await self._rows(query, _SessionCompany)
        return rows[0].company if rows else None

    async def list_user_companies(self, user_id: UUID) -> list[Company]:
        query = (
            self._client.table("sessions")
            .select("company:companies(*)")
            .eq("user_id", str(user_id))
            .eq("is_active", True)
        )
        unique: dict[UUID, Company] = {}
        for row in await self._rows(query, _SessionCompany):
            unique.setdefault(row.company.id, row.company)
        return sorted(unique.values(), key=lambda company: (company.created_at, company.id))

    # --- conversations ----------------------------------------------------------------------

    async def get_or_create_conversation(
        self,
        *,
        kapso_conversation_id: str,
        user_id: UUID,
        metadata: WhatsAppConversationMetadata,
        title: str | None = None,
    ) -> ConversationResult:
        params: dict[str, JSON] = {
            "p_kapso_conversation_id": kapso_conversation_id,
            "p_user_id": str(user_id),
            "p_metadata": metadata.creation_json(),
            "p_title": title,
        }
        result = await self._one_json(
            self._client.rpc("whatsapp_get_or_create_conversation", params), ConversationResult
        )
        if result is None:
            raise StoreError("get-or-create returned no conversation")
        return result

    async def get_conversation(self, conversation_id: UUID) -> Conversation | None:
        query = self._client.table("conversations").select("*").eq("id", str(conversation_id))
        return await self._first(query, Conversation)

    async def find_conversation_by_kapso_id(
        self, kapso_conversation_id: str
    ) -> Conversation | None:
        query = (
            self._client.table("conversations")
            .select("*")
            .eq("metadata->>channel", WHATSAPP)
            .eq("metadata->>kapso_conversation_id", kapso_conversation_id)
            .limit(1)
        )
        return await self._first(query, Conversation)

    async def find_latest_conversation_for_phone(
        self, phone: str, *, business_phone_number_id: str | None = None
    ) -> Conversation | None:
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        query = (
            self._client.table("conversations")
            .select("*")
            .eq("metadata->>channel", WHATSAPP)
            .eq("metadata->>phone_number", e164)
        )
        if business_phone_number_id is not None:
            query = query.eq("metadata->>business_phone_number_id", business_phone_number_id)
        query = query.order("updated_at", desc=True).order("id", desc=True).limit(1)
        return await self._first(query, Conversation)

    async def update_conversation(
        self,
        conversation_id: UUID,
        *,
        metadata: WhatsAppConversationMetadata | None = None,
        status: ConversationStatus | None = None,
    ) -> Conversation | None:
        params: dict[str, JSON] = {
            "p_conversation_id": str(conversation_id),
            "p_metadata": metadata.patch_json() if metadata else {},
            "p_status": status.value if status else None,
        }
        return await self._first(
            self._client.rpc("whatsapp_patch_conversation", params), Conversation
        )

    async def list_company_conversations(
        self, company_id: UUID, *, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        query = (
            self._client.table("conversations")
            .select("*")
            .eq("metadata->>channel", WHATSAPP)
            .eq("metadata->>company_id", str(company_id))
            .order("updated_at", desc=True)
            .order("id", desc=True)
            .range(offset, offset + limit - 1)
        )
        return await self._rows(query, Conversation)

    # --- messages ---------------------------------------------------------------------------

    async def append_message(self, message: NewMessage) -> MessageAppendResult:
        params = _append_params(message)
        result = await self._one_json(
            self._client.rpc("whatsapp_append_message", params), MessageAppendResult
        )
        if result is None:
            raise StoreError("append returned no message")
        return result

    async def list_messages(
        self, conversation_id: UUID, *, limit: int = 50, offset: int = 0, newest_first: bool = False
    ) -> list[Message]:
        if limit <= 0:
            return []
        query = (
            self._client.table("messages")
            .select("*")
            .eq("conversation_id", str(conversation_id))
            .order("created_at", desc=newest_first)
            .order("id", desc=newest_first)
            .range(offset, offset + limit - 1)
        )
        return await self._rows(query, Message)

    async def find_message_by_wamid(self, wamid: str) -> Message | None:
        query = (
            self._client.table("messages")
            .select("*")
            .eq("metadata->>channel", WHATSAPP)
            .eq("metadata->>whatsapp_message_id", wamid)
            .limit(1)
        )
        return await self._first(query, Message)

    async def latest_message(
        self, conversation_id: UUID, *, role: MessageRole | None = None
    ) -> Message | None:
        query = (
            self._client.table("messages").select("*").eq("conversation_id", str(conversation_id))
        )
        if role is not None:
            query = query.eq("role", role.value)
        query = query.order("created_at", desc=True).order("id", desc=True).limit(1)
        return await self._first(query, Message)

    # --- webhook inbox ----------------------------------------------------------------------

    async def record_inbox_events(self, events: Sequence[NewInboxEvent]) -> list[InboxRecordResult]:
        if not events:
            return []
        return await self._inbox_writes.submit(events)

    async def _record_inbox_batch(
        self, batch: Sequence[Sequence[NewInboxEvent]]
    ) -> list[list[InboxRecordResult]]:
        payload: list[JSON] = [
            event.model_dump(mode="json") for events in batch for event in events
        ]
        query = self._client.rpc("whatsapp_inbox_record", {"p_events": payload})
        recorded = await self._rows(query, InboxRecordResult)
        if len(recorded) != len(payload):
            raise StoreError(f"recorded {len(recorded)} of {len(payload)} inbox events")
        results: list[list[InboxRecordResult]] = []
        position = 0
        for events in batch:
            results.append(recorded[position : position + len(events)])
            position += len(events)
        return results

    async def claim_inbox_events(
        self, *, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[InboxEvent]:
        params: dict[str, JSON] = {
            "p_owner": owner,
            "p_limit": limit,
            "p_lease_seconds": lease_seconds,
            "p_max_attempts": max_attempts,
        }
        query = self._client.rpc("whatsapp_inbox_claim_with_conversation", params)
        events = await self._rows(query, InboxEvent)
        return sorted(events, key=lambda event: event.seq)

    async def extend_inbox_lease(
        self, event_id: UUID, *, owner: str, lease_seconds: float
    ) -> InboxEvent | None:
        params: dict[str, JSON] = {
            "p_event_id": str(event_id),
            "p_owner": owner,
            "p_lease_seconds": lease_seconds,
        }
        return await self._first(
            self._client.rpc("whatsapp_inbox_extend_lease", params), InboxEvent
        )

    async def complete_inbox_event(self, event_id: UUID, *, owner: str) -> InboxEvent | None:
        params: dict[str, JSON] = {"p_event_id": str(event_id), "p_owner": owner}
        return await self._first(self._client.rpc("whatsapp_inbox_complete", params), InboxEvent)

    async def fail_inbox_event(
        self,
        event_id: UUID,
        *,
        owner: str,
        error: str,
        retry_delay_seconds: float,
        max_attempts: int,
        permanent: bool = False,
    ) -> InboxEvent | None:
        params: dict[str, JSON] = {
            "p_event_id": str(event_id),
            "p_owner": owner,
            "p_error": error,
            "p_retry_delay_seconds": retry_delay_seconds,
            "p_max_attempts": max_attempts,
            "p_permanent": permanent,
        }
        return await self._first(self._client.rpc("whatsapp_inbox_fail", params), InboxEvent)

    async def requeue_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        params: dict[str, JSON] = {"p_event_id": str(event_id)}
        return await self._first(self._client.rpc("whatsapp_inbox_requeue", params), InboxEvent)

    async def get_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        query = self._client.table("whatsapp_inbox_events").select("*").eq("id", str(event_id))
        return await self._first(query, InboxEvent)

    async def list_inbox_events(
        self, state: InboxState, *, limit: int = 50, offset: int = 0
    ) -> list[InboxEvent]:
        if limit <= 0:
            return []
        query = (
            self._client.table("whatsapp_inbox_events")
            .select("*")
            .eq("state", state.value)
            .order("received_at", desc=True)
            .order("seq", desc=True)
            .range(offset, offset + limit - 1)
        )
        return await self._rows(query, InboxEvent)

    # --- outbound messages ------------------------------------------------------------------

    async def record_outbound(
        self, message: NewOutboundMessage, *, count_attempt: bool = False
    ) -> OutboundRecordResult:
        function = (
            "whatsapp_outbound_record_attempted" if count_attempt else "whatsapp_outbound_record"
        )
        result = await self._one_json(
            self._client.rpc(function, {"p_message": _outbound_row(message)}),
            OutboundRecordResult,
        )
        if result is None:
            raise StoreError("record returned no outbound message")
        return result

    async def mark_outbound_attempt(self, outbound_id: UUID) -> OutboundMessage:
        query = self._client.rpc("whatsapp_outbound_mark_attempt", {"p_id": str(outbound_id)})
        message = await self._first(query, OutboundMessage)
        if message is None:
            raise StoreConstraintError(f"no outbound message {outbound_id}")
        return message

    async def advance_outbound_status(
        self,
        outbound_id: UUID,
        status: OutboundStatus,
        *,
        wamid: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        return await self._advance(str(outbound_id), None, status, wamid, error_code, error_message)

    async def advance_outbound_status_by_wamid(
        self,
        wamid: str,
        status: OutboundStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        return await self._advance(None, wamid, status, None, error_code, error_message)

    async def _advance(
        self,
        outbound_id: str | None,
        wamid: str | None,
        status: OutboundStatus,
        set_wamid: str | None,
        error_code: str | None,
        error_message: str | None,
    ) -> OutboundStatusChange | None:
        params: dict[str, JSON] = {
            "p_id": outbound_id,
            "p_wamid": wamid,
            "p_status": status.value,
            "p_set_wamid": set_wamid,
            "p_error_code": error_code,
            "p_error_message": error_message,
        }
        return await self._one_json(
            self._client.rpc("whatsapp_outbound_advance", params), OutboundStatusChange
        )

    async def get_outbound(self, outbound_id: UUID) -> OutboundMessage | None:
        query = (
            self._client.table("whatsapp_outbound_messages").select("*").eq("id", str(outbound_id))
        )
        return await self._first(query, OutboundMessage)

    async def find_outbound_by_wamid(self, wamid: str) -> OutboundMessage | None:
        query = self._client.table("whatsapp_outbound_messages").select("*").eq("wamid", wamid)
        return await self._first(query, OutboundMessage)

    async def find_outbound_by_idempotency_key(
        self, idempotency_key: str, *, user_id: UUID | None
    ) -> OutboundMessage | None:
        query = (
            self._client.table("whatsapp_outbound_messages")
            .select("*")
            .eq("idempotency_key", idempotency_key)
        )
        query = (
            query.is_("user_id", "null") if user_id is None else query.eq("user_id", str(user_id))
        )
        return await self._first(query.limit(1), OutboundMessage)

    async def list_outbound_for_inbox_event(self, inbox_event_id: UUID) -> list[OutboundMessage]:
        query = (
            self._client.table("whatsapp_outbound_messages")
            .select("*")
            .eq("inbox_event_id", str(inbox_event_id))
            .order("created_at")
            .order("id")
        )
        return await self._rows(query, OutboundMessage)

    # --- combined operations ----------------------------------------------------------------

    async def record_inbound_with_replies(
        self,
        message: NewMessage,
        replies: Sequence[NewOutboundMessage],
        *,
        count_first_attempt: bool,
    ) -> InboundWithReplies:
        params = _append_params(message)
        params["p_replies"] = [_outbound_row(reply) for reply in replies]
        params["p_count_first_attempt"] = count_first_attempt
        result = await self._one_json(
            self._client.rpc("whatsapp_record_inbound_with_replies", params), InboundWithReplies
        )
        if result is None:
            raise StoreError("record_inbound_with_replies returned nothing")
        return result

    async def record_sent(
        self,
        outbound_id: UUID,
        *,
        wamid: str,
        message: NewMessage | None = None,
        complete: InboxLease | None = None,
    ) -> SentRecord:
        params: dict[str, JSON] = {
            "p_outbound_id": str(outbound_id),
            "p_wamid": wamid,
            "p_message": _message_json(message) if message is not None else None,
            "p_event_id": str(complete.event_id) if complete else None,
            "p_owner": complete.owner if complete else None,
        }
        result = await self._one_json(self._client.rpc("whatsapp_record_sent", params), SentRecord)
        if result is None:
            raise StoreError("record_sent returned nothing")
        return result

    async def find_latest_outbound_to(
        self, to_phone: str, *, purpose: str
    ) -> OutboundMessage | None:
        phone = try_normalize_phone(to_phone) or to_phone
        query = (
            self._client.table("whatsapp_outbound_messages")
            .select("*")
            .eq("to_phone", phone)
            .eq("purpose", purpose)
            .order("created_at", desc=True)
            .limit(1)
        )
        return await self._first(query, OutboundMessage)


def _message_json(message: NewMessage) -> dict[str, JSON]:
    """A message as `whatsapp_append_message` takes it (its arguments, without the `p_`)."""
    return {
        "conversation_id": str(message.conversation_id),
        "role": message.role.value,
        "content": message.content,
        "metadata": message.metadata.model_dump(mode="json", exclude_none=True),
        "user_id": str(message.user_id) if message.user_id else None,
    }


def _append_params(message: NewMessage) -> dict[str, JSON]:
    """The arguments of `whatsapp_append_message` (and the functions that call it)."""
    return {f"p_{name}": value for name, value in _message_json(message).items()}


def _outbound_row(message: NewOutboundMessage) -> dict[str, JSON]:
    """The `p_message` of `whatsapp_outbound_record`: the row, its number in E.164."""
    row: dict[str, JSON] = message.model_dump(mode="json")
    row["to_phone"] = try_normalize_phone(message.to_phone) or message.to_phone
    return row


class _SessionCompany(BaseModel):
    company: Company


def _parse(model: type[ModelT], data: JSON) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise StoreError(f"unexpected data from the store: {err.error_count()} errors") from err


def _single(rows: list[ModelT], what: str) -> ModelT:
    if len(rows) != 1:
        raise StoreError(f"expected one {what} row, got {len(rows)}")
    return rows[0]
