"""`uv run python -m app.dev_seed`: a demo user for local development (idempotent).

Seeds +56912345678 (María González) working in "Demo SpA" into the configured database, so the
local flow can be tried at once: `uv run kapso-emulator say +56912345678 "Hola"`.

`DirectorySeeder` writes Fizko's user and company rows, which the web app owns and the service
only reads: the dev seed, the tests and the benchmarks use it to create them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from app.core.settings import get_settings
from app.db.connect import open_database
from app.db.pool import Database
from app.repositories.directory import DirectoryStore
from app.repositories.models import Company, Profile, UserSession
from app.repositories.rows import parse, required

DEMO_PHONE = "+56912345678"
DEMO_NAME = "María González"
DEMO_COMPANY = "Demo SpA"
DEMO_RUT = "76.123.456-7"


class DirectorySeeder:
    """Creates profiles, companies and sessions (as Fizko's web app does)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create_profile(
        self,
        *,
        phone: str | None,
        full_name: str | None = None,
        email: str | None = None,
        profile_id: UUID | None = None,
        phone_verified: bool = False,
    ) -> Profile:
        row = await self._db.fetchrow(
            """insert into public.profiles (id, phone, full_name, email, phone_verified,
                                            created_at, updated_at)
               values (coalesce($1, gen_random_uuid()), $2, $3, $4, $5,
                       clock_timestamp(), clock_timestamp())
               returning *""",
            profile_id,
            phone,
            full_name,
            email,
            phone_verified,
        )
        return parse(Profile, required(row, "profile"))

    async def create_company(
        self, *, business_name: str, rut: str | None = None, trade_name: str | None = None
    ) -> Company:
        row = await self._db.fetchrow(
            """insert into public.companies (rut, business_name, trade_name, created_at)
               values ($1, $2, $3, clock_timestamp()) returning *""",
            rut,
            business_name,
            trade_name,
        )
        return parse(Company, required(row, "company"))

    async def create_session(
        self,
        *,
        user_id: UUID,
        company_id: UUID,
        is_active: bool = True,
        last_accessed_at: datetime | None = None,
    ) -> UserSession:
        row = await self._db.fetchrow(
            """insert into public.sessions (user_id, company_id, is_active, last_accessed_at,
                                            created_at)
               values ($1, $2, $3, $4, clock_timestamp()) returning *""",
            user_id,
            company_id,
            is_active,
            last_accessed_at,
        )
        return parse(UserSession, required(row, "session"))


async def seed() -> str:
    async with open_database(get_settings()) as database:
        directory = DirectoryStore(database)
        seeder = DirectorySeeder(database)
        profile = await directory.find_profile_by_phone(DEMO_PHONE)
        if profile is None:
            profile = await seeder.create_profile(
                phone=DEMO_PHONE, full_name=DEMO_NAME, phone_verified=True
            )
        if await directory.get_active_company(profile.id) is None:
            company = await seeder.create_company(business_name=DEMO_COMPANY, rut=DEMO_RUT)
            await seeder.create_session(user_id=profile.id, company_id=company.id)
        return f"Demo user {DEMO_NAME} ({DEMO_PHONE}) in {DEMO_COMPANY}"


def main() -> None:
    print(asyncio.run(seed()))


if __name__ == "__main__":
    main()
