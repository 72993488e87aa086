"""`ConversationStore`: WhatsApp conversations and their messages, in the `conversations` and
`messages` tables the web chat shares (WhatsApp rows carry `channel: "whatsapp"` metadata)."""

from __future__ import annotations

from uuid import UUID

from app.core.phone import try_normalize_phone
from app.db.pool import Connection, Database
from app.repositories.models import (
    Conversation,
    ConversationResult,
    ConversationStatus,
    Message,
    MessageAppendResult,
    MessageRole,
    NewMessage,
    WhatsAppConversationMetadata,
)
from app.repositories.rows import parse, parse_all, parse_optional, required

WHATSAPP = "whatsapp"

# The partial unique indexes' predicates, as `on conflict` must name them to use them.
_WHATSAPP_CONVERSATION = "metadata ->> 'channel' = 'whatsapp'"
_BY_KAPSO_ID = f"""select * from public.conversations
                    where {_WHATSAPP_CONVERSATION}
                      and metadata ->> 'kapso_conversation_id' = $1"""  # noqa: S608
_MESSAGE_BY_WAMID = """select * from public.messages
                        where metadata ->> 'channel' = 'whatsapp'
                          and metadata ->> 'whatsapp_message_id' = $1"""


class ConversationStore:
    """Conversations by Kapso id or phone, and their messages."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # --- conversations -------------------------------------------------------------------

    async def get_or_create_conversation(
        self,
        *,
        kapso_conversation_id: str,
        user_id: UUID,
        metadata: WhatsAppConversationMetadata,
        title: str | None = None,
        tx: Connection | None = None,
    ) -> ConversationResult:
        """The conversation of this Kapso conversation id, created if missing (race-safe).

        `metadata` is used only when creating; channel and kapso_conversation_id are set here.
        """
        data = metadata.creation_json()
        data.update(channel=WHATSAPP, kapso_conversation_id=kapso_conversation_id)
        async with self._db.connection(tx) as connection:
            created = await self._db.fetchrow(
                f"""insert into public.conversations (user_id, title, metadata)
                    values ($1, $2, $3)
                    on conflict ((metadata ->> 'kapso_conversation_id'))
                       where {_WHATSAPP_CONVERSATION} do nothing
                    returning *""",  # noqa: S608 - a constant predicate, values are bound
                user_id,
                title or "Nueva conversación",
                data,
                tx=connection,
            )
            if created is not None:
                return ConversationResult(conversation=parse(Conversation, created), created=True)
            # Another writer created it first; this statement's snapshot sees its commit.
            existing = await self._db.fetchrow(_BY_KAPSO_ID, kapso_conversation_id, tx=connection)
        return ConversationResult(
            conversation=parse(Conversation, required(existing, "conversation")), created=False
        )

    async def get_conversation(self, conversation_id: UUID) -> Conversation | None:
        row = await self._db.fetchrow(
            "select * from public.conversations where id = $1", conversation_id
        )
        return parse_optional(Conversation, row)

    async def find_conversation_by_kapso_id(
        self, kapso_conversation_id: str
    ) -> Conversation | None:
        return parse_optional(
            Conversation, await self._db.fetchrow(_BY_KAPSO_ID, kapso_conversation_id)
        )

    async def find_latest_conversation_for_phone(
        self, phone: str, *, business_phone_number_id: str | None = None
    ) -> Conversation | None:
        """The most recently active WhatsApp conversation with this number (any format),
        on this business number when given."""
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        row = await self._db.fetchrow(
            f"""select * from public.conversations
                 where {_WHATSAPP_CONVERSATION}
                   and metadata ->> 'phone_number' = $1
                   and ($2::text is null or metadata ->> 'business_phone_number_id' = $2)
                 order by updated_at desc, id desc limit 1""",  # noqa: S608 - constant predicate
            e164,
            business_phone_number_id,
        )
        return parse_optional(Conversation, row)

    async def update_conversation(
        self,
        conversation_id: UUID,
        *,
        metadata: WhatsAppConversationMetadata | None = None,
        status: ConversationStatus | None = None,
        tx: Connection | None = None,
    ) -> Conversation | None:
        """Merge the explicitly set metadata fields (others are kept) and set the status."""
        row = await self._db.fetchrow(
            """update public.conversations
                  set metadata = metadata || $2, status = coalesce($3, status),
                      updated_at = clock_timestamp()
                where id = $1 returning *""",
            conversation_id,
            metadata.patch_json() if metadata else {},
            status.value if status else None,
            tx=tx,
        )
        return parse_optional(Conversation, row)

    async def list_company_conversations(
        self, company_id: UUID, *, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        """The company's WhatsApp conversations, most recently active first."""
        if limit <= 0:
            return []
        rows = await self._db.fetch(
            f"""select * from public.conversations
                 where {_WHATSAPP_CONVERSATION} and metadata ->> 'company_id' = $1
                 order by updated_at desc, id desc limit $2 offset $3""",  # noqa: S608
            str(company_id),
            limit,
            max(offset, 0),
        )
        return parse_all(Conversation, rows)

    async def conversations_by_kapso_ids(
        self, kapso_ids: set[str], *, tx: Connection | None = None
    ) -> dict[str, Conversation]:
        """The stored WhatsApp conversations of these Kapso ids, by id."""
        if not kapso_ids:
            return {}
        rows = await self._db.fetch(
            f"""select * from public.conversations
                 where {_WHATSAPP_CONVERSATION}
                   and metadata ->> 'kapso_conversation_id' = any($1::text[])""",  # noqa: S608
            sorted(kapso_ids),
            tx=tx,
        )
        found = parse_all(Conversation, rows)
        return {c.metadata.kapso_conversation_id or "": c for c in found}

    # --- messages ------------------------------------------------------------------------

    async def append_message(
        self, message: NewMessage, *, tx: Connection | None = None
    ) -> MessageAppendResult:
        """Store a message; a WhatsApp message whose wamid is stored already is not stored
        again. The conversation's `updated_at` follows its newest message."""
        metadata = message.metadata.model_dump(mode="json", exclude_none=True)
        async with self._db.connection(tx) as connection:
            # clock_timestamp(), not now(): messages written in one transaction keep their order.
            row = await self._db.fetchrow(
                """with stored as (
                     insert into public.messages
                       (conversation_id, user_id, role, content, metadata, created_at)
                     values ($1, $2, $3, $4, $5, clock_timestamp())
                     on conflict ((metadata ->> 'whatsapp_message_id'))
                        where metadata ->> 'channel' = 'whatsapp' do nothing
                     returning *
                   ), touched as (
                     update public.conversations c set updated_at = s.created_at
                       from stored s where c.id = s.conversation_id
                   )
                   select * from stored""",
                message.conversation_id,
                message.user_id,
                message.role.value,
                message.content,
                metadata,
                tx=connection,
            )
            if row is not None:
                return MessageAppendResult(message=parse(Message, row), created=True)
            existing = await self._db.fetchrow(
                _MESSAGE_BY_WAMID, message.metadata.whatsapp_message_id, tx=connection
            )
        return MessageAppendResult(
            message=parse(Message, required(existing, "message")), created=False
        )

    async def list_messages(
        self, conversation_id: UUID, *, limit: int = 50, offset: int = 0, newest_first: bool = False
    ) -> list[Message]:
        if limit <= 0:
            return []
        direction = "desc" if newest_first else "asc"
        rows = await self._db.fetch(
            f"""select * from public.messages where conversation_id = $1
                 order by created_at {direction}, id {direction} limit $2 offset $3""",  # noqa: S608 - one of two literals
            conversation_id,
            limit,
            max(offset, 0),
        )
        return parse_all(Message, rows)

    async def find_message_by_wamid(self, wamid: str) -> Message | None:
        return parse_optional(Message, await self._db.fetchrow(_MESSAGE_BY_WAMID, wamid))

    async def latest_message(
        self, conversation_id: UUID, *, role: MessageRole | None = None
    ) -> Message | None:
        """The newest message (of this role), e.g. the last inbound one for the 24-hour window."""
        row = await self._db.fetchrow(
            """select * from public.messages
                where conversation_id = $1 and ($2::text is null or role = $2)
                order by created_at desc, id desc limit 1""",
            conversation_id,
            role.value if role else None,
        )
        return parse_optional(Message, row)
