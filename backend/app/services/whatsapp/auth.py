"""Phone-number authentication: a WhatsApp sender is a Fizko user if `profiles.phone` matches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID

import asyncpg
from supabase import AsyncClient, Client

from app.core.clock import Clock, utc_now
from app.core.logging import mask_phone
from app.core.phone import try_normalize_phone
from app.db.pool import Database
from app.repositories.directory import DirectoryStore
from app.repositories.models import Company, Profile, WhatsAppConversationMetadata
from app.repositories.stores import Stores
from app.repositories.supabase_directory import SupabaseDirectory

logger = logging.getLogger(__name__)


class ProfileLookup(Protocol):
    """What phone authentication reads: `DirectoryStore`, or `SupabaseDirectory`."""

    async def find_profile_by_phone(self, phone: str) -> Profile | None: ...

    async def get_active_company(self, user_id: UUID) -> Company | None: ...


class IdentityStatus(StrEnum):
    UNKNOWN_NUMBER = "unknown_number"
    NO_ACTIVE_COMPANY = "no_active_company"
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True, slots=True)
class WhatsAppIdentity:
    """Who wrote: a Fizko user and their active company, or why not."""

    status: IdentityStatus
    phone: str | None
    user_id: UUID | None = None
    company_id: UUID | None = None
    from_cache: bool = False
    # When user/company were looked up: a cache carried elsewhere keeps its age.
    resolved_at: datetime | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.status is IdentityStatus.AUTHENTICATED


class PhoneAuthenticator:
    """Resolves a sender's phone to user and company, trusting a fresh conversation cache.

    The seed's optimisation: a conversation's metadata caches user_id/company_id, so a message
    on a known conversation needs no profile or session query. Unlike the original, the cache
    expires after `cache_ttl`, so a changed phone or active company is picked up.
    """

    def __init__(
        self,
        directory: ProfileLookup,
        *,
        cache_ttl: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._directory = directory
        self._cache_ttl = cache_ttl
        self._clock = clock

    def cached_identity(
        self, phone: str | None, cached: WhatsAppConversationMetadata | None
    ) -> WhatsAppIdentity | None:
        """The identity in a conversation's metadata, if it is complete, fresh and this phone's."""
        if cached is None or cached.user_id is None or cached.company_id is None:
            return None
        if cached.resolved_at is None or self._clock() - cached.resolved_at >= self._cache_ttl:
            return None
        if phone is not None and cached.phone_number not in (None, phone):
            return None
        return WhatsAppIdentity(
            IdentityStatus.AUTHENTICATED,
            phone,
            user_id=cached.user_id,
            company_id=cached.company_id,
            from_cache=True,
            resolved_at=cached.resolved_at,
        )

    async def identify(
        self, raw_phone: str | None, cached: WhatsAppConversationMetadata | None = None
    ) -> WhatsAppIdentity:
        """Authenticate a sender. A store failure raises; it never reads as "not registered"."""
        phone = try_normalize_phone(raw_phone)
        from_cache = self.cached_identity(phone, cached)
        if from_cache is not None:
            return from_cache
        if phone is None:
            return WhatsAppIdentity(IdentityStatus.UNKNOWN_NUMBER, None)
        resolved_at = self._clock()
        profile = await self._directory.find_profile_by_phone(phone)
        if profile is None:
            logger.info("WhatsApp sender %s is not a Fizko user", mask_phone(phone))
            return WhatsAppIdentity(IdentityStatus.UNKNOWN_NUMBER, phone)
        company = await self._directory.get_active_company(profile.id)
        if company is None:
            return WhatsAppIdentity(
                IdentityStatus.NO_ACTIVE_COMPANY, phone, user_id=profile.id, resolved_at=resolved_at
            )
        return WhatsAppIdentity(
            IdentityStatus.AUTHENTICATED,
            phone,
            user_id=profile.id,
            company_id=company.id,
            resolved_at=resolved_at,
        )


# What the seed's entry point accepts as its store.
SeedStore = ProfileLookup | Stores | Database | asyncpg.Pool | AsyncClient | Client


async def authenticate_user_by_whatsapp(store: SeedStore, phone_number: str) -> UUID | None:
    """The seed's entry point: the Fizko user id for a WhatsApp number, or None.

    `store` is the service's `Stores` or `DirectoryStore`, a `Database` or an asyncpg pool
    (a direct connection), or — as in the seed — a Supabase client, sync or async (service
    role: it reads `profiles` through the data API).
    """
    phone = try_normalize_phone(phone_number)
    if phone is None:
        return None
    profile = await profile_lookup(store).find_profile_by_phone(phone)
    return profile.id if profile else None


def profile_lookup(store: SeedStore) -> ProfileLookup:
    """The lookup behind any store the seed's entry point accepts."""
    if isinstance(store, Stores):
        return store.directory
    if isinstance(store, Database):
        return DirectoryStore(store)
    if isinstance(store, asyncpg.Pool):
        return DirectoryStore(Database(store, dsn=""))
    if isinstance(store, AsyncClient | Client):
        return SupabaseDirectory(store)
    return store
