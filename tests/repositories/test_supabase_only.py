"""What Fizko's web app sees through Supabase's data API (PostgREST): row-level security.

The service writes over a direct connection to the stack's database (`Stores`, as the tables'
owner); users read through PostgREST with their JWT, anon with the anon key alone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions, ClientOptions, acreate_client, create_client

from app.db.pool import Database, PoolOptions
from app.dev_seed import DirectorySeeder
from app.repositories.models import (
    MessageMetadata,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    WhatsAppConversationMetadata,
)
from app.repositories.stores import Stores
from app.repositories.supabase_directory import SupabaseDirectory
from app.services.whatsapp.auth import authenticate_user_by_whatsapp
from support.store_data import make_member, unique_phone
from support.supabase_stack import SupabaseStack

ClientFactory = Callable[[str | None], AbstractAsyncContextManager[AsyncClient]]


@pytest.fixture
async def stack_database(supabase_stack: SupabaseStack) -> AsyncIterator[Database]:
    """A direct connection to the stack's database, as the service has."""
    database = await Database.connect(
        supabase_stack.database_url, PoolOptions(min_size=1, max_size=4)
    )
    yield database
    await database.aclose()


@pytest.fixture
def stack_stores(stack_database: Database) -> Stores:
    return Stores.on(stack_database)


@pytest.fixture
def stack_seeder(stack_database: Database) -> DirectorySeeder:
    return DirectorySeeder(stack_database)


@pytest.fixture
def client_as(supabase_stack: SupabaseStack) -> ClientFactory:
    """A supabase async client sending a user's JWT (or only the anon key when None)."""

    @asynccontextmanager
    async def open_client(token: str | None) -> AsyncIterator[AsyncClient]:
        http = httpx.AsyncClient(timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        options = AsyncClientOptions(httpx_client=http, headers=headers)
        try:
            yield await acreate_client(supabase_stack.url, supabase_stack.anon_key, options=options)
        finally:
            await http.aclose()

    return open_client


async def test_rls_user_reads_only_their_companies_rows(
    stack_stores: Stores,
    stack_seeder: DirectorySeeder,
    client_as: ClientFactory,
    supabase_stack: SupabaseStack,
) -> None:
    user_a, company_a = await make_member(stack_seeder, company_name="A SpA")
    user_b, company_b = await make_member(stack_seeder, company_name="B SpA")
    conversations = {}
    for user, company in ((user_a, company_a), (user_b, company_b)):
        result = await stack_stores.conversations.get_or_create_conversation(
            kapso_conversation_id=f"kc-{uuid.uuid4()}",
            user_id=user.id,
            metadata=WhatsAppConversationMetadata(
                user_id=user.id, company_id=company.id, phone_number=unique_phone()
            ),
        )
        conversations[company.id] = result.conversation.id
        await stack_stores.conversations.append_message(
            NewMessage(
                conversation_id=result.conversation.id,
                role=MessageRole.USER,
                content=f"secret of {company.business_name}",
                metadata=MessageMetadata(
                    channel="whatsapp", whatsapp_message_id=f"wamid.{uuid.uuid4()}"
                ),
            )
        )
        await stack_stores.outbound.record_outbound(
            NewOutboundMessage(
                to_phone=unique_phone(), message_type="text", purpose="api", company_id=company.id
            )
        )
    await stack_stores.inbox.record_inbox_events(
        [NewInboxEvent(idempotency_key=f"rls-{uuid.uuid4()}", event="x", payload={"a": 1})]
    )

    async with client_as(supabase_stack.user_token(user_a.id)) as client:
        seen = (await client.table("conversations").select("id").execute()).data
        assert {row["id"] for row in seen} == {str(conversations[company_a.id])}
        by_id = (
            await client.table("conversations")
            .select("id")
            .eq("id", str(conversations[company_b.id]))
            .execute()
        )
        assert by_id.data == []
        messages = (
            await client.table("messages").select("content, conversation_id").execute()
        ).data
        assert [row["content"] for row in messages] == ["secret of A SpA"]
        companies = (await client.table("companies").select("id").execute()).data
        assert [row["id"] for row in companies] == [str(company_a.id)]
        sessions = (await client.table("sessions").select("user_id").execute()).data
        assert {row["user_id"] for row in sessions} == {str(user_a.id)}
        profiles = (await client.table("profiles").select("id").execute()).data
        assert [row["id"] for row in profiles] == [str(user_a.id)]
        outbound = (
            await client.table("whatsapp_outbound_messages").select("company_id").execute()
        ).data
        assert {row["company_id"] for row in outbound} == {str(company_a.id)}
        # The inbox (raw payloads) and its queues are for the service only.
        for table in ("whatsapp_inbox_events", "whatsapp_inbox_queues"):
            with pytest.raises(APIError):
                await client.table(table).select("*").execute()
        # Users cannot write, nor run the service's functions.
        with pytest.raises(APIError):
            await (
                client.table("conversations")
                .insert({"user_id": str(user_a.id), "metadata": {"channel": "whatsapp"}})
                .execute()
            )
        with pytest.raises(APIError):
            await (
                client.table("whatsapp_outbound_messages")
                .update({"status": "read"})
                .eq("company_id", str(company_a.id))
                .execute()
            )
        with pytest.raises(APIError):
            await client.rpc(
                "whatsapp_inbox_claim",
                {"p_owner": "intruder", "p_limit": 10, "p_lease_seconds": 30, "p_max_attempts": 3},
            ).execute()

    # User B, the other way round.
    async with client_as(supabase_stack.user_token(user_b.id)) as client:
        seen = (await client.table("conversations").select("id").execute()).data
        assert {row["id"] for row in seen} == {str(conversations[company_b.id])}
        messages = (await client.table("messages").select("content").execute()).data
        assert [row["content"] for row in messages] == ["secret of B SpA"]


async def test_rls_anon_reads_nothing(
    stack_stores: Stores, stack_seeder: DirectorySeeder, client_as: ClientFactory
) -> None:
    user, company = await make_member(stack_seeder)
    conversation = await stack_stores.conversations.get_or_create_conversation(
        kapso_conversation_id=f"kc-{uuid.uuid4()}",
        user_id=user.id,
        metadata=WhatsAppConversationMetadata(user_id=user.id, company_id=company.id),
    )
    await stack_stores.conversations.append_message(
        NewMessage(
            conversation_id=conversation.conversation.id, role=MessageRole.USER, content="hola"
        )
    )
    await stack_stores.outbound.record_outbound(
        NewOutboundMessage(
            to_phone=unique_phone(), message_type="text", purpose="api", company_id=company.id
        )
    )
    await stack_stores.inbox.record_inbox_events(
        [NewInboxEvent(idempotency_key=f"anon-{uuid.uuid4()}", event="x", payload={})]
    )
    async with client_as(None) as client:
        for table in ("profiles", "companies", "sessions", "conversations", "messages"):
            assert (await client.table(table).select("*").execute()).data == []
        assert (await client.table("whatsapp_outbound_messages").select("*").execute()).data == []
        for table in ("whatsapp_inbox_events", "whatsapp_inbox_queues"):
            with pytest.raises(APIError):
                await client.table(table).select("*").execute()
        with pytest.raises(APIError):
            await client.table("profiles").insert({"phone": "+56911111111"}).execute()


async def test_the_seeds_entry_point_with_a_supabase_client(
    stack_stores: Stores, stack_seeder: DirectorySeeder, supabase_stack: SupabaseStack
) -> None:
    """The seed calls `authenticate_user_by_whatsapp(supabase, phone)` with its own client
    (service role, sync or async): the lookup reads the same rows, in the same order, through
    PostgREST as `DirectoryStore` does over the direct connection."""
    phone = unique_phone()
    await stack_seeder.create_profile(phone=phone)
    verified = await stack_seeder.create_profile(phone=phone.removeprefix("+"), phone_verified=True)
    await stack_seeder.create_profile(phone=phone)  # newer, not verified
    older = await stack_seeder.create_company(business_name="Older SpA")
    newest = await stack_seeder.create_company(business_name="Newest SpA")
    never_used = await stack_seeder.create_company(business_name="Never Used SpA")
    now = datetime.now(UTC)
    await stack_seeder.create_session(
        user_id=verified.id, company_id=older.id, last_accessed_at=now - timedelta(days=1)
    )
    await stack_seeder.create_session(
        user_id=verified.id, company_id=newest.id, last_accessed_at=now
    )
    await stack_seeder.create_session(user_id=verified.id, company_id=never_used.id)

    async with httpx.AsyncClient(timeout=10) as http:
        async_client = await acreate_client(
            supabase_stack.url,
            supabase_stack.service_role_key,
            options=AsyncClientOptions(httpx_client=http),
        )
        with httpx.Client(timeout=10) as sync_http:
            sync_client = create_client(
                supabase_stack.url,
                supabase_stack.service_role_key,
                options=ClientOptions(httpx_client=sync_http),
            )
            for client in (async_client, sync_client):
                assert await authenticate_user_by_whatsapp(client, phone) == verified.id
                assert await authenticate_user_by_whatsapp(client, unique_phone()) is None
                directory = SupabaseDirectory(client)
                active = await directory.get_active_company(verified.id)
                assert active is not None
                assert active.id == newest.id
                assert active == await stack_stores.directory.get_active_company(verified.id)
                by_phone = await directory.find_profile_by_phone(phone)
                assert by_phone == await stack_stores.directory.find_profile_by_phone(phone)
                assert by_phone is not None
                assert by_phone.id == verified.id
