"""Test data: unique phone numbers, users with a company."""

from __future__ import annotations

import uuid

from app.dev_seed import DirectorySeeder
from app.repositories.models import Company, Profile


def unique_phone() -> str:
    """A valid Chilean mobile number (9 then 2, 4, 5 or 8) no other test uses, in E.164.

    Valid, not merely possible: normalize_phone prefers a valid reading, and bare digits of an
    unallocated Chilean number can read as a valid number of another country.
    """
    value = uuid.uuid4().int
    return f"+569{'2458'[value % 4]}{value // 4 % 10**7:07d}"


async def make_member(
    seeder: DirectorySeeder, *, company_name: str = "Demo SpA"
) -> tuple[Profile, Company]:
    """A user with one active company."""
    profile = await seeder.create_profile(phone=unique_phone(), full_name="Ana Pérez")
    company = await seeder.create_company(business_name=company_name, rut="76.123.456-7")
    await seeder.create_session(user_id=profile.id, company_id=company.id)
    return profile, company
