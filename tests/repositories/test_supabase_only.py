"""What only the Supabase side has: RLS, SQL functions, migrations, data API failures."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from app.core.phone import normalize_phone
from app.repositories.errors import StoreUnavailableError
from app.repositories.models import (
    MessageMetadata,
    MessageRole,
    NewInboxEvent,
    NewMessage,
    NewOutboundMessage,
    OutboundStatus,
    WhatsAppConversationMetadata,
)
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from support.store_data import make_member, unique_phone
from support.supabase_stack import ROOT, SupabaseStack

ClientFactory = Callable[[str | None], AbstractAsyncContextManager[AsyncClient]]


@pytest.fixture
async def repository(supabase_stack: SupabaseStack) -> AsyncIterator[SupabaseWhatsAppRepository]:
    repository = await SupabaseWhatsAppRepository.connect(
        supabase_stack.url, supabase_stack.service_role_key
    )
    yield repository
    await repository.aclose()


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


# The cases the storage issue names, plus the forms WhatsApp and people use in Chile.
PHONE_CASES = [
    "+56 9 1234 5678",
    "56912345678",
    "+56912345678",
    "912345678",
    "9 1234 5678",
    "0056912345678",
    "(+56) 9-1234-5678",
    "+56 2 2123 4567",
    "+1 415 555 2671",
    "+54 9 11 1234 5678",
]


@pytest.mark.parametrize("raw", PHONE_CASES)
async def test_sql_and_python_normalise_phones_alike(
    repository: SupabaseWhatsAppRepository,
    client_as: ClientFactory,
    supabase_stack: SupabaseStack,
    raw: str,
) -> None:
    async with client_as(supabase_stack.service_role_key) as client:
        response = await client.rpc("normalize_phone_e164", {"raw": raw}).execute()
    assert response.data == normalize_phone(raw)


async def test_sql_normalisation_rejects_non_numbers(
    client_as: ClientFactory, supabase_stack: SupabaseStack
) -> None:
    async with client_as(supabase_stack.service_role_key) as client:
        for raw in ["", "abc", "12345"]:
            response = await client.rpc("normalize_phone_e164", {"raw": raw}).execute()
            assert response.data is None


async def test_rls_user_reads_only_their_companies_rows(
    repository: SupabaseWhatsAppRepository, client_as: ClientFactory, supabase_stack: SupabaseStack
) -> None:
    user_a, company_a = await make_member(repository, company_name="A SpA")
    user_b, company_b = await make_member(repository, company_name="B SpA")
    conversations = {}
    for user, company in ((user_a, company_a), (user_b, company_b)):
        result = await repository.get_or_create_conversation(
            kapso_conversation_id=f"kc-{uuid.uuid4()}",
            user_id=user.id,
            metadata=WhatsAppConversationMetadata(
                user_id=user.id, company_id=company.id, phone_number=unique_phone()
            ),
        )
        conversations[company.id] = result.conversation.id
        await repository.append_message(
            NewMessage(
                conversation_id=result.conversation.id,
                role=MessageRole.USER,
                content=f"secret of {company.business_name}",
                metadata=MessageMetadata(
                    channel="whatsapp", whatsapp_message_id=f"wamid.{uuid.uuid4()}"
                ),
            )
        )
        await repository.record_outbound(
            NewOutboundMessage(
                to_phone=unique_phone(), message_type="text", purpose="api", company_id=company.id
            )
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
        # The inbox (raw payloads) is for the service only.
        with pytest.raises(APIError):
            await client.table("whatsapp_inbox_events").select("id").execute()
        # Users cannot write, nor run the service's functions.
        with pytest.raises(APIError):
            await (
                client.table("conversations")
                .insert({"user_id": str(user_a.id), "metadata": {"channel": "whatsapp"}})
                .execute()
            )
        with pytest.raises(APIError):
            await client.rpc(
                "whatsapp_inbox_claim", {"p_owner": "intruder", "p_limit": 10}
            ).execute()


async def test_rls_anon_reads_nothing(
    repository: SupabaseWhatsAppRepository, client_as: ClientFactory
) -> None:
    await make_member(repository)
    await repository.record_inbox_events(
        [NewInboxEvent(idempotency_key=f"anon-{uuid.uuid4()}", event="x", payload={})]
    )
    async with client_as(None) as client:
        for table in ("profiles", "companies", "sessions", "conversations", "messages"):
            assert (await client.table(table).select("*").execute()).data == []
        assert (await client.table("whatsapp_outbound_messages").select("*").execute()).data == []
        with pytest.raises(APIError):
            await client.table("whatsapp_inbox_events").select("*").execute()
        with pytest.raises(APIError):
            await client.table("profiles").insert({"phone": "+56911111111"}).execute()


async def test_status_trigger_refuses_backward_updates(
    repository: SupabaseWhatsAppRepository, client_as: ClientFactory, supabase_stack: SupabaseStack
) -> None:
    """The SQL backstop: even a direct update cannot move a status backwards."""
    recorded = await repository.record_outbound(
        NewOutboundMessage(to_phone=unique_phone(), message_type="text", purpose="reply")
    )
    await repository.advance_outbound_status(recorded.message.id, OutboundStatus.DELIVERED)
    async with client_as(supabase_stack.service_role_key) as client:
        table = client.table("whatsapp_outbound_messages")
        with pytest.raises(APIError) as raised:
            await table.update({"status": "sent"}).eq("id", str(recorded.message.id)).execute()
    assert raised.value.code == "23514"


def test_migrations_are_safe_to_run_again(supabase_stack: SupabaseStack) -> None:
    """Every statement is "if not exists"/"or replace": a database that has it all is fine."""
    migrations = sorted((ROOT / "backend" / "supabase" / "migrations").glob("*.sql"))
    assert migrations
    for migration in migrations:
        result = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                supabase_stack.database_url,
                "--single-transaction",
                "-f",
                str(migration),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PGOPTIONS": "-c client_min_messages=warning", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr


async def test_unreachable_data_api_is_unavailable_not_not_found() -> None:
    """The original told registered users to register when the database hiccupped."""
    repository = await SupabaseWhatsAppRepository.connect(
        f"http://127.0.0.1:{closed_port()}", "service-key", timeout_seconds=2
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await repository.find_profile_by_phone("+56912345678")
        with pytest.raises(StoreUnavailableError):
            await repository.claim_inbox_events(owner="w", limit=1, lease_seconds=1, max_attempts=1)
        with pytest.raises(StoreUnavailableError):
            await repository.ping()
    finally:
        await repository.aclose()


async def test_gateway_without_postgrest_is_unavailable(supabase_stack: SupabaseStack) -> None:
    """The gateway answering 502 (PostgREST down) is a store outage too."""
    transport = httpx.MockTransport(
        lambda request: httpx.Response(502, text="<html>Bad Gateway</html>")
    )
    http = httpx.AsyncClient(transport=transport)
    client = await acreate_client(
        supabase_stack.url,
        supabase_stack.service_role_key,
        options=AsyncClientOptions(httpx_client=http, postgrest_client_retry=False),
    )
    repository = SupabaseWhatsAppRepository(client, http)
    try:
        with pytest.raises(StoreUnavailableError):
            await repository.get_active_company(uuid.uuid4())
    finally:
        await repository.aclose()


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bootstrap_is_kept_out_of_the_real_migrations() -> None:
    migrations = ROOT / "backend" / "supabase" / "migrations"
    for migration in migrations.glob("*.sql"):
        text = migration.read_text()
        assert "create role" not in text.lower(), migration.name
        assert "auth.users" not in text.split("--")[0]
    assert Path(ROOT / "backend" / "supabase" / "local" / "bootstrap.sql").is_file()
