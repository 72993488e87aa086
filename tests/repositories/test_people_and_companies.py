"""Contract: profiles by phone, the active-company rule and company membership."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core.phone import normalize_phone
from app.dev_seed import DirectorySeeder
from app.repositories.directory import DirectoryStore
from app.repositories.stores import Stores
from support.store_data import make_member, unique_phone


@pytest.fixture
def store(stores: Stores) -> DirectoryStore:
    return stores.directory


@pytest.mark.parametrize(
    "typed",
    ["+56 9 {a} {b}", "56 9{a}{b}", "+569{a}{b}", "9 {a} {b}", "0056 9 {a}-{b}", "(+56) 9-{a}-{b}"],
)
async def test_find_profile_by_phone_matches_any_common_format(
    store: DirectoryStore, seeder: DirectorySeeder, typed: str
) -> None:
    digits = unique_phone().removeprefix("+569")
    a, b = digits[:4], digits[4:]
    profile = await seeder.create_profile(phone=typed.format(a=a, b=b), full_name="Ana")

    assert profile.phone_e164 == f"+569{digits}"
    for query in (f"+569{digits}", f"569{digits}", f"+56 9 {a} {b}", f"9{digits}"):
        found = await store.find_profile_by_phone(query)
        assert found is not None
        assert found.id == profile.id


async def test_find_profile_by_phone_unknown_or_invalid_is_none(store: DirectoryStore) -> None:
    assert await store.find_profile_by_phone(unique_phone()) is None
    assert await store.find_profile_by_phone("not a phone") is None
    assert await store.find_profile_by_phone("") is None


async def test_profile_without_phone_is_stored(
    store: DirectoryStore, seeder: DirectorySeeder
) -> None:
    profile = await seeder.create_profile(phone=None, email="a@example.cl")
    assert profile.phone_e164 is None
    assert await store.get_profile(profile.id) == profile
    assert await store.get_profile(uuid.uuid4()) is None


async def test_create_profile_with_given_id(store: DirectoryStore, seeder: DirectorySeeder) -> None:
    wanted = uuid.uuid4()
    profile = await seeder.create_profile(phone=unique_phone(), profile_id=wanted)
    assert profile.id == wanted


async def test_verified_profile_wins_on_a_shared_number(
    store: DirectoryStore, seeder: DirectorySeeder
) -> None:
    phone = unique_phone()
    first = await seeder.create_profile(phone=phone)
    second = await seeder.create_profile(phone=normalize_phone(phone))
    found = await store.find_profile_by_phone(phone)
    assert found is not None
    assert found.id in {first.id, second.id}


async def test_active_company_is_newest_active_session_with_nulls_last(
    store: DirectoryStore,
    seeder: DirectorySeeder,
) -> None:
    profile = await seeder.create_profile(phone=unique_phone())
    older = await seeder.create_company(business_name="Older SpA")
    newest = await seeder.create_company(business_name="Newest SpA")
    never_used = await seeder.create_company(business_name="Never Used SpA")
    inactive = await seeder.create_company(business_name="Inactive SpA")
    now = datetime.now(UTC)
    await seeder.create_session(
        user_id=profile.id, company_id=older.id, last_accessed_at=now - timedelta(days=2)
    )
    await seeder.create_session(
        user_id=profile.id, company_id=newest.id, last_accessed_at=now - timedelta(hours=1)
    )
    # NULL last_accessed_at must not win (Postgres sorts NULLs first in DESC order).
    await seeder.create_session(user_id=profile.id, company_id=never_used.id)
    await seeder.create_session(
        user_id=profile.id, company_id=inactive.id, is_active=False, last_accessed_at=now
    )

    active = await store.get_active_company(profile.id)
    assert active is not None
    assert active.id == newest.id
    assert active.business_name == "Newest SpA"


async def test_active_company_with_only_never_accessed_sessions(
    store: DirectoryStore,
    seeder: DirectorySeeder,
) -> None:
    profile = await seeder.create_profile(phone=unique_phone())
    company = await seeder.create_company(business_name="Solo SpA")
    await seeder.create_session(user_id=profile.id, company_id=company.id)
    active = await store.get_active_company(profile.id)
    assert active is not None
    assert active.id == company.id


async def test_no_active_company(store: DirectoryStore, seeder: DirectorySeeder) -> None:
    profile = await seeder.create_profile(phone=unique_phone())
    assert await store.get_active_company(profile.id) is None
    company = await seeder.create_company(business_name="Old SpA")
    await seeder.create_session(user_id=profile.id, company_id=company.id, is_active=False)
    assert await store.get_active_company(profile.id) is None
    assert await store.list_user_companies(profile.id) == []


async def test_list_user_companies(store: DirectoryStore, seeder: DirectorySeeder) -> None:
    profile, first = await make_member(seeder)
    second = await seeder.create_company(business_name="Second SpA")
    await seeder.create_session(user_id=profile.id, company_id=second.id)
    # A second session for the same company is still one membership.
    await seeder.create_session(
        user_id=profile.id, company_id=first.id, last_accessed_at=datetime.now(UTC)
    )
    other, _ = await make_member(seeder)

    companies = await store.list_user_companies(profile.id)
    assert {company.id for company in companies} == {first.id, second.id}
    assert len(companies) == 2
    assert all(company.id != other.id for company in companies)


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


async def test_sql_and_python_normalise_phones_alike(stores: Stores) -> None:
    """`profiles.phone_e164` is computed in SQL; lookups normalise in Python: they must agree."""
    for raw in PHONE_CASES:
        row = await stores.database.fetchrow("select public.normalize_phone_e164($1)", raw)
        assert row is not None
        assert row[0] == normalize_phone(raw), raw


async def test_sql_normalisation_rejects_non_numbers(stores: Stores) -> None:
    for raw in ["", "abc", "12345", None]:
        row = await stores.database.fetchrow("select public.normalize_phone_e164($1)", raw)
        assert row is not None
        assert row[0] is None, raw
