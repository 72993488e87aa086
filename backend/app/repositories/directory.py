"""`DirectoryStore`: Fizko's users and companies as this service reads them (profiles,
companies, sessions). The web app owns these rows; the service never writes them."""

from __future__ import annotations

from uuid import UUID

from app.core.phone import try_normalize_phone
from app.db.pool import Database
from app.repositories.models import Company, Profile
from app.repositories.rows import parse_all, parse_optional


class DirectoryStore:
    """Who a phone number is, and which companies a user works in."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get_profile(self, user_id: UUID) -> Profile | None:
        row = await self._db.fetchrow("select * from public.profiles where id = $1", user_id)
        return parse_optional(Profile, row)

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        """The profile whose phone is this number in any common format (matched on E.164).

        A text that is not a phone number matches nothing. With several profiles on one
        number, a verified one wins, then the newest.
        """
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        row = await self._db.fetchrow(
            """select * from public.profiles where phone_e164 = $1
                order by phone_verified desc, created_at desc limit 1""",
            e164,
        )
        return parse_optional(Profile, row)

    async def get_active_company(self, user_id: UUID) -> Company | None:
        """The company of the user's newest active session by last_accessed_at (NULLs last)."""
        row = await self._db.fetchrow(
            """select c.* from public.sessions s join public.companies c on c.id = s.company_id
                where s.user_id = $1 and s.is_active
                order by s.last_accessed_at desc nulls last, s.created_at desc
                limit 1""",
            user_id,
        )
        return parse_optional(Company, row)

    async def list_user_companies(self, user_id: UUID) -> list[Company]:
        """The companies the user belongs to (an active session), for authorisation."""
        rows = await self._db.fetch(
            """select c.* from public.companies c
                where c.id in (select s.company_id from public.sessions s
                                where s.user_id = $1 and s.is_active)
                order by c.created_at, c.id""",
            user_id,
        )
        return parse_all(Company, rows)
