"""Contract: profiles by phone, the active-company rule and company membership."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core.phone import normalize_phone
from app.repositories.whatsapp import WhatsAppRepository
from support.store_data import make_member, unique_phone


@pytest.mark.parametrize(
    "typed",
    ["+56 9 {a} {b}", "56 9{a}{b}", "+569{a}{b}", "9 {a} {b}", "0056 9 {a}-{b}", "(+56) 9-{a}-{b}"],
)
async def test_find_profile_by_phone_matches_any_common_format(
    repository: WhatsAppRepository, typed: str
) -> None:
    digits = unique_phone().removeprefix("+569")
    a, b = digits[:4], digits[4:]
    profile = await repository.create_profile(phone=typed.format(a=a, b=b), full_name="Ana")

    assert profile.phone_e164 == f"+569{digits}"
    for query in (f"+569{digits}", f"569{digits}", f"+56 9 {a} {b}", f"9{digits}"):
        found = await repository.find_profile_by_phone(query)
        assert found is not None
        assert found.id == profile.id


async def test_find_profile_by_phone_unknown_or_invalid_is_none(
    repository: WhatsAppRepository,
) -> None:
    assert await repository.find_profile_by_phone(unique_phone()) is None
    assert await repository.find_profile_by_phone("not a phone") is None
    assert await repository.find_profile_by_phone("") is None


async def test_profile_without_phone_is_stored(repository: WhatsAppRepository) -> None:
    profile = await repository.create_profile(phone=None, email="a@example.cl")
    assert profile.phone_e164 is None
    assert await repository.get_profile(profile.id) == profile
    assert await repository.get_profile(uuid.uuid4()) is None


async def test_create_profile_with_given_id(repository: WhatsAppRepository) -> None:
    wanted = uuid.uuid4()
    profile = await repository.create_profile(phone=unique_phone(), profile_id=wanted)
    assert profile.id == wanted


async def test_verified_profile_wins_on_a_shared_number(repository: WhatsAppRepository) -> None:
    phone = unique_phone()
    first = await repository.create_profile(phone=phone)
    second = await repository.create_profile(phone=normalize_phone(phone))
    found = await repository.find_profile_by_phone(phone)
    assert found is not None
    assert found.id in {first.id, second.id}


async def test_active_company_is_newest_active_session_with_nulls_last(
    repository: WhatsAppRepository,
) -> None:
    profile = await repository.create_profile(phone=unique_phone())
    older = await repository.create_company(business_name="Older SpA")
    newest = await repository.create_company(business_name="Newest SpA")
    never_used = await repository.create_company(business_name="Never Used SpA")
    inactive = await repository.create_company(business_name="Inactive SpA")
    now = datetime.now(UTC)
    await repository.create_session(
        user_id=profile.id, company_id=older.id, last_accessed_at=now - timedelta(days=2)
    )
    await repository.create_session(
        user_id=profile.id, company_id=newest.id, last_accessed_at=now - timedelta(hours=1)
    )
    # NULL last_accessed_at must not win (Postgres sorts NULLs first in DESC order).
    await repository.create_session(user_id=profile.id, company_id=never_used.id)
    await repository.create_session(
        user_id=profile.id, company_id=inactive.id, is_active=False, last_accessed_at=now
    )

    active = await repository.get_active_company(profile.id)
    assert active is not None
    assert active.id == newest.id
    assert active.business_name == "Newest SpA"


async def test_active_company_with_only_never_accessed_sessions(
    repository: WhatsAppRepository,
) -> None:
    profile = await repository.create_profile(phone=unique_phone())
    company = await repository.create_company(business_name="Solo SpA")
    await repository.create_session(user_id=profile.id, company_id=company.id)
    active = await repository.get_active_company(profile.id)
    assert active is not None
    assert active.id == company.id


async def test_no_active_company(repository: WhatsAppRepository) -> None:
    profile = await repository.create_profile(phone=unique_phone())
    assert await repository.get_active_company(profile.id) is None
    company = await repository.create_company(business_name="Old SpA")
    await repository.create_session(user_id=profile.id, company_id=company.id, is_active=False)
    assert await repository.get_active_company(profile.id) is None
    assert await repository.list_user_companies(profile.id) == []


async def test_list_user_companies(repository: WhatsAppRepository) -> None:
    profile, first = await make_member(repository)
    second = await repository.create_company(business_name="Second SpA")
    await repository.create_session(user_id=profile.id, company_id=second.id)
    # A second session for the same company is still one membership.
    await repository.create_session(
        user_id=profile.id, company_id=first.id, last_accessed_at=datetime.now(UTC)
    )
    other, _ = await make_member(repository)

    companies = await repository.list_user_companies(profile.id)
    assert {company.id for company in companies} == {first.id, second.id}
    assert len(companies) == 2
    assert all(company.id != other.id for company in companies)
