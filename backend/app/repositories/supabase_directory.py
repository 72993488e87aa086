"""`SupabaseDirectory`: the phone lookup through Supabase's data API, for the seed's
`authenticate_user_by_whatsapp(supabase, phone)`, which is handed a Supabase client rather than
the service's database. The service itself reads `DirectoryStore` over its direct connection;
this reads the same rows with the same ordering (a verified profile first, then the newest)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from postgrest.exceptions import APIError
from supabase import AsyncClient, Client

from app.core.phone import try_normalize_phone
from app.repositories.errors import StoreError, StoreUnavailableError
from app.repositories.models import Company, Profile
from app.repositories.rows import parse_optional


class SupabaseDirectory:
    """Profiles and active companies through a Supabase client, sync or async."""

    def __init__(self, client: AsyncClient | Client) -> None:
        self._client = client

    async def _run(self, query: Any) -> list[dict[str, Any]]:
        try:
            if isinstance(self._client, AsyncClient):
                response = await query.execute()
            else:
                # The sync client blocks: keep it off the event loop.
                response = await asyncio.to_thread(query.execute)
        except APIError as err:
            raise StoreError(f"supabase: {err.message}") from err
        except OSError as err:
            raise StoreUnavailableError(f"supabase unreachable: {err}") from err
        data = response.data
        return list(data) if isinstance(data, list) else []

    async def find_profile_by_phone(self, phone: str) -> Profile | None:
        e164 = try_normalize_phone(phone)
        if e164 is None:
            return None
        rows = await self._run(
            self._client.table("profiles")
            .select("*")
            .eq("phone_e164", e164)
            .order("phone_verified", desc=True)
            .order("created_at", desc=True)
            .limit(1)
        )
        return parse_optional(Profile, rows[0] if rows else None)

    async def get_active_company(self, user_id: UUID) -> Company | None:
        rows = await self._run(
            self._client.table("sessions")
            .select("last_accessed_at, created_at, companies(*)")
            .eq("user_id", str(user_id))
            .eq("is_active", True)
            .order("last_accessed_at", desc=True, nullsfirst=False)
            .order("created_at", desc=True)
            .limit(1)
        )
        company = rows[0].get("companies") if rows else None
        return parse_optional(Company, company if isinstance(company, dict) else None)
