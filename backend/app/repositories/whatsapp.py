"""`WhatsAppRepository`: every database operation the WhatsApp services make.

Two implementations keep the same contract (tests/repositories runs one suite on both):
`SupabaseWhatsAppRepository` (Supabase data API, async client, service-role key) and
`SqliteWhatsAppRepository` (an embedded SQLite file, the default without Supabase).

Every method raises `StoreError` (or a subclass) when the store fails; `None` or an empty
list always means "there is no such row", never "the store did not answer".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

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


class WhatsAppRepository(Protocol):
    """The storage operations of the WhatsApp integration."""

    @property
    def backend_name(self) -> str:
        """ "supabase" or "sqlite", for logs and the health endpoint."""
        ...

    async def ping(self) -> None:
        """Check the store answers; raises `StoreUnavailableError` when it does not."""
        ...

    async def aclose(self) -> None:
        """Release connections; the repository is not used afterwards."""
        ...

    # --- Users and companies (Fizko's tables; the create methods seed tests and dev data) ---

    async def create_profile(
        self,
        *,
        phone: str | None,
        full_name: str | None = None,
        email: str | None = None,
        profile_id: UUID | None = None,
    ) -> Profile: ...

    async def get_profile(self, user_id: UUID) -> Profile | None: ...

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        """The profile whose phone is this number in any common format (matched on E.164).

        A text that is not a phone number matches nothing. With several profiles on one
        number, a verified one wins, then the newest.
        """
        ...

    async def create_company(
        self, *, business_name: str, rut: str | None = None, trade_name: str | None = None
    ) -> Company: ...

    async def create_session(
        self,
        *,
        user_id: UUID,
        company_id: UUID,
        is_active: bool = True,
        last_accessed_at: datetime | None = None,
    ) -> UserSession: ...

    async def get_active_company(self, user_id: UUID) -> Company | None:
        """The company of the user's newest active session by last_accessed_at (NULLs last)."""
        ...

    async def list_user_companies(self, user_id: UUID) -> list[Company]:
        """The companies the user belongs to (an active session), for authorisation."""
        ...

    # --- Conversations (shared `conversations` table, metadata channel = whatsapp) ---

    async def get_or_create_conversation(
        self,
        *,
        kapso_conversation_id: str,
        user_id: UUID,
        metadata: WhatsAppConversationMetadata,
        title: str | None = None,
    ) -> ConversationResult:
        """The conversation of this Kapso conversation id, created if missing (race-safe).

        `metadata` is used only when creating; channel and kapso_conversation_id are set here.
        """
        ...

    async def get_conversation(self, conversation_id: UUID) -> Conversation | None: ...

    async def find_conversation_by_kapso_id(
        self, kapso_conversation_id: str
    ) -> Conversation | None: ...

    async def find_latest_conversation_for_phone(
        self, phone: str, *, business_phone_number_id: str | None = None
    ) -> Conversation | None:
        """The most recently active WhatsApp conversation with this number (any format),
        on this business number when given."""
        ...

    async def update_conversation(
        self,
        conversation_id: UUID,
        *,
        metadata: WhatsAppConversationMetadata | None = None,
        status: ConversationStatus | None = None,
    ) -> Conversation | None:
        """Merge the explicitly set metadata fields (others are kept) and set the status."""
        ...

    async def list_company_conversations(
        self, company_id: UUID, *, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        """The company's WhatsApp conversations, most recently active first."""
        ...

    # --- Messages ---

    async def append_message(self, message: NewMessage) -> MessageAppendResult:
        """Store a message; a WhatsApp message whose wamid is stored already is not stored again."""
        ...

    async def list_messages(
        self, conversation_id: UUID, *, limit: int = 50, offset: int = 0, newest_first: bool = False
    ) -> list[Message]: ...

    async def find_message_by_wamid(self, wamid: str) -> Message | None: ...

    async def latest_message(
        self, conversation_id: UUID, *, role: MessageRole | None = None
    ) -> Message | None:
        """The newest message (of this role), e.g. the last inbound one for the 24-hour window."""
        ...

    # --- Webhook inbox ---

    async def record_inbox_events(self, events: Sequence[NewInboxEvent]) -> list[InboxRecordResult]:
        """Record events in one transaction; duplicates (same idempotency key, or same wamid and
        event) are not recorded again. One result per input, in order."""
        ...

    async def claim_inbox_events(
        self, *, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[InboxEvent]:
        """Lease up to `limit` due events to `owner`, oldest first, counting an attempt each.

        Due: pending with next_attempt_at reached, or processing with an expired lease. Only the
        oldest unfinished event of each conversation key is handed out, and none while another
        event of its key is in flight (processing, lease alive). An expired lease on the
        last allowed attempt makes the event dead instead. Each event comes with the stored
        WhatsApp conversation whose Kapso id is its conversation key (`InboxEvent.conversation`).
        """
        ...

    async def extend_inbox_lease(
        self, event_id: UUID, *, owner: str, lease_seconds: float
    ) -> InboxEvent | None:
        """Extend the lease; None when `owner` no longer holds it."""
        ...

    async def complete_inbox_event(self, event_id: UUID, *, owner: str) -> InboxEvent | None:
        """Mark done; None when `owner` no longer holds the lease."""
        ...

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
        """Back to pending after `retry_delay_seconds`, or dead once attempts reached
        `max_attempts` (or when `permanent`). None when `owner` no longer holds the lease."""
        ...

    async def requeue_inbox_event(self, event_id: UUID) -> InboxEvent | None:
        """Replay a dead event (pending, due now, attempts reset); None if it is not dead."""
        ...

    async def get_inbox_event(self, event_id: UUID) -> InboxEvent | None: ...

    async def list_inbox_events(
        self, state: InboxState, *, limit: int = 50, offset: int = 0
    ) -> list[InboxEvent]:
        """Events in a state, newest first (the admin view of dead events)."""
        ...

    # --- Outbound messages ---

    async def record_outbound(
        self, message: NewOutboundMessage, *, count_attempt: bool = False
    ) -> OutboundRecordResult:
        """Record a message before sending it; the same idempotency key (per user) or wamid
        returns the existing row with created=False, and the caller must not send again.

        With `count_attempt`, a row created by this call has its first send attempt counted
        (as `mark_outbound_attempt`): the caller sends it next."""
        ...

    async def mark_outbound_attempt(self, outbound_id: UUID) -> OutboundMessage:
        """Count a send attempt (and its time) just before calling Kapso.

        Raises `StoreConstraintError` when there is no such message (it was recorded first).
        """
        ...

    async def advance_outbound_status(
        self,
        outbound_id: UUID,
        status: OutboundStatus,
        *,
        wamid: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        """Move the status forward (and set the wamid once known); a backward or equal status
        changes nothing. None when there is no such message."""
        ...

    async def advance_outbound_status_by_wamid(
        self,
        wamid: str,
        status: OutboundStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> OutboundStatusChange | None:
        """`advance_outbound_status` for a status webhook, which knows only the wamid."""
        ...

    async def get_outbound(self, outbound_id: UUID) -> OutboundMessage | None: ...

    async def find_outbound_by_wamid(self, wamid: str) -> OutboundMessage | None: ...

    async def find_outbound_by_idempotency_key(
        self, idempotency_key: str, *, user_id: UUID | None
    ) -> OutboundMessage | None: ...

    async def list_outbound_for_inbox_event(self, inbox_event_id: UUID) -> list[OutboundMessage]:
        """The messages sent (or being sent) for an inbound event, oldest first: what an earlier
        attempt at the event already decided to send."""
        ...

    # --- Combined operations: one transaction (and one round trip) for a step of the flow ---

    async def record_inbound_with_replies(
        self,
        message: NewMessage,
        replies: Sequence[NewOutboundMessage],
        *,
        count_first_attempt: bool,
    ) -> InboundWithReplies:
        """Store an inbound message and record the replies to send, in one transaction.

        The message as `append_message`, each reply as `record_outbound`, in order. With
        `count_first_attempt`, a first reply created by this call has its send attempt counted
        already (as `mark_outbound_attempt`): the caller sends it next.
        """
        ...

    async def record_sent(
        self,
        outbound_id: UUID,
        *,
        wamid: str,
        message: NewMessage | None = None,
        complete: InboxLease | None = None,
    ) -> SentRecord:
        """Kapso accepted a message: in one transaction, advance it to sent with its wamid (as
        `advance_outbound_status`), store `message` in its conversation when it is accepted (as
        `append_message`), and complete the inbox event of `complete` (as
        `complete_inbox_event`)."""
        ...

    async def find_latest_outbound_to(
        self, to_phone: str, *, purpose: str
    ) -> OutboundMessage | None:
        """The newest message of this purpose sent to this number (any format), e.g. to send
        the registration notice once per period."""
        ...
