"""Phone authentication: profile lookup, active company, and the conversation cache's TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from app.db.pool import Database
from app.dev_seed import DirectorySeeder
from app.repositories.directory import DirectoryStore
from app.repositories.errors import StoreUnavailableError
from app.repositories.models import Company, Profile, WhatsAppConversationMetadata
from app.repositories.stores import Stores
from app.services.whatsapp.auth import (
    IdentityStatus,
    PhoneAuthenticator,
    ProfileLookup,
    authenticate_user_by_whatsapp,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def authenticator(directory: ProfileLookup) -> PhoneAuthenticator:
    return PhoneAuthenticator(directory, cache_ttl=timedelta(hours=1), clock=lambda: NOW)


async def test_known_user_with_company(stores: Stores, seeder: DirectorySeeder) -> None:
    profile = await seeder.create_profile(phone="+56 9 1234 5678")
    company = await seeder.create_company(business_name="Demo SpA")
    await seeder.create_session(user_id=profile.id, company_id=company.id)

    identity = await authenticator(stores.directory).identify("56912345678")
    assert identity.status is IdentityStatus.AUTHENTICATED
    assert identity.user_id == profile.id
    assert identity.company_id == company.id
    assert identity.phone == "+56912345678"
    assert identity.resolved_at == NOW
    assert not identity.from_cache
    assert await authenticate_user_by_whatsapp(stores, "+56912345678") == profile.id


async def test_the_seeds_entry_point_takes_any_store_of_ours(
    stores: Stores, database: Database, database_url: str, seeder: DirectorySeeder
) -> None:
    """`authenticate_user_by_whatsapp(store, phone)`: the service's stores, its directory, the
    Database, or a plain asyncpg pool (a Supabase client is in test_supabase_only.py)."""
    profile = await seeder.create_profile(phone="+56 9 8765 4321")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        for store in (stores, stores.directory, database, pool):
            assert await authenticate_user_by_whatsapp(store, "56987654321") == profile.id
            assert await authenticate_user_by_whatsapp(store, "+56911111111") is None
            assert await authenticate_user_by_whatsapp(store, "not a phone") is None
    finally:
        await pool.close()


async def test_unknown_number_and_no_company(stores: Stores, seeder: DirectorySeeder) -> None:
    directory = stores.directory
    assert (await authenticator(directory).identify("+56987654321")).status is (
        IdentityStatus.UNKNOWN_NUMBER
    )
    assert (await authenticator(directory).identify("not a phone")).status is (
        IdentityStatus.UNKNOWN_NUMBER
    )
    assert await authenticate_user_by_whatsapp(stores, "+56987654321") is None
    profile = await seeder.create_profile(phone="+56987654321")
    identity = await authenticator(directory).identify("+56987654321")
    assert identity.status is IdentityStatus.NO_ACTIVE_COMPANY
    assert identity.user_id == profile.id


class FailingStore(DirectoryStore):
    """A directory whose lookups fail, as during a database outage."""

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        raise StoreUnavailableError("database down")


@pytest.fixture
def failing_store(database: Database) -> FailingStore:
    return FailingStore(database)


class NoLookups:
    """A directory that must not be asked (the cache decides alone)."""

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        raise AssertionError("looked up")

    async def get_active_company(self, user_id: UUID) -> Company | None:
        raise AssertionError("looked up")


async def test_a_fresh_cache_is_used_without_queries(failing_store: FailingStore) -> None:
    user, company = uuid4(), uuid4()
    cached = WhatsAppConversationMetadata(
        user_id=user,
        company_id=company,
        resolved_at=NOW - timedelta(minutes=59),
        phone_number="+56912345678",
    )
    identity = await authenticator(failing_store).identify("+56912345678", cached)
    assert identity.from_cache
    assert (identity.user_id, identity.company_id) == (user, company)


@pytest.mark.parametrize(
    "cached",
    [
        # Too old: re-resolved so a changed phone or company is picked up.
        WhatsAppConversationMetadata(
            user_id=uuid4(), company_id=uuid4(), resolved_at=NOW - timedelta(hours=1)
        ),
        # Never resolved (the original's metadata had no timestamp).
        WhatsAppConversationMetadata(user_id=uuid4(), company_id=uuid4()),
        # Another number's cache.
        WhatsAppConversationMetadata(
            user_id=uuid4(), company_id=uuid4(), resolved_at=NOW, phone_number="+56911111111"
        ),
        # Incomplete.
        WhatsAppConversationMetadata(user_id=uuid4(), resolved_at=NOW),
    ],
)
def test_stale_or_foreign_cache_is_not_used(cached: WhatsAppConversationMetadata) -> None:
    assert authenticator(NoLookups()).cached_identity("+56912345678", cached) is None


async def test_a_store_failure_is_not_mistaken_for_an_unknown_number(
    failing_store: FailingStore,
) -> None:
    with pytest.raises(StoreUnavailableError):
        await authenticator(failing_store).identify("+56912345678")
    with pytest.raises(StoreUnavailableError):
        await authenticate_user_by_whatsapp(failing_store, "+56912345678")
