"""Phone authentication: profile lookup, active company, and the conversation cache's TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from app.repositories.errors import StoreUnavailableError
from app.repositories.models import WhatsAppConversationMetadata
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.services.whatsapp.auth import (
    IdentityStatus,
    PhoneAuthenticator,
    authenticate_user_by_whatsapp,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[SqliteWhatsAppRepository]:
    repo = SqliteWhatsAppRepository(tmp_path / "auth.sqlite3")
    yield repo
    await repo.aclose()


def authenticator(repository: SqliteWhatsAppRepository) -> PhoneAuthenticator:
    return PhoneAuthenticator(repository, cache_ttl=timedelta(hours=1), clock=lambda: NOW)


async def test_known_user_with_company(repository: SqliteWhatsAppRepository) -> None:
    profile = await repository.create_profile(phone="+56 9 1234 5678")
    company = await repository.create_company(business_name="Demo SpA")
    await repository.create_session(user_id=profile.id, company_id=company.id)

    identity = await authenticator(repository).identify("56912345678")
    assert identity.status is IdentityStatus.AUTHENTICATED
    assert identity.user_id == profile.id
    assert identity.company_id == company.id
    assert identity.phone == "+56912345678"
    assert not identity.from_cache
    assert await authenticate_user_by_whatsapp(repository, "+56912345678") == profile.id


async def test_unknown_number_and_no_company(repository: SqliteWhatsAppRepository) -> None:
    assert (await authenticator(repository).identify("+56987654321")).status is (
        IdentityStatus.UNKNOWN_NUMBER
    )
    assert (await authenticator(repository).identify("not a phone")).status is (
        IdentityStatus.UNKNOWN_NUMBER
    )
    assert await authenticate_user_by_whatsapp(repository, "+56987654321") is None
    profile = await repository.create_profile(phone="+56987654321")
    identity = await authenticator(repository).identify("+56987654321")
    assert identity.status is IdentityStatus.NO_ACTIVE_COMPANY
    assert identity.user_id == profile.id


class FailingStore(SqliteWhatsAppRepository):
    """A store whose lookups fail, as during a database outage."""

    async def find_profile_by_phone(self, phone: str) -> None:
        raise StoreUnavailableError("database down")


@pytest.fixture
async def failing_store(tmp_path: Path) -> AsyncIterator[FailingStore]:
    store = FailingStore(tmp_path / "down.sqlite3")
    yield store
    await store.aclose()


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
def test_stale_or_foreign_cache_is_not_used(
    repository: SqliteWhatsAppRepository, cached: WhatsAppConversationMetadata
) -> None:
    assert authenticator(repository).cached_identity("+56912345678", cached) is None


async def test_a_store_failure_is_not_mistaken_for_an_unknown_number(
    failing_store: FailingStore,
) -> None:
    with pytest.raises(StoreUnavailableError):
        await authenticator(failing_store).identify("+56912345678")
    with pytest.raises(StoreUnavailableError):
        await authenticate_user_by_whatsapp(failing_store, "+56912345678")
