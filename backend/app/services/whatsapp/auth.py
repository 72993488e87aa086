"""Phone-number authentication: a WhatsApp sender is a Fizko user if `profiles.phone` matches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from supabase import AsyncClient

from app.core.clock import Clock, utc_now
from app.core.logging import mask_phone
from app.core.phone import try_normalize_phone
from app.repositories.models import WhatsAppConversationMetadata
from app.repositories.whatsapp import WhatsAppRepository

logger = logging.getLogger(__name__)


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
        repository: WhatsAppRepository,
        *,
        cache_ttl: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._repository = repository
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
        profile = await self._repository.find_profile_by_phone(phone)
        if profile is None:
            logger.info("WhatsApp sender %s is not a Fizko user", mask_phone(phone))
            return WhatsAppIdentity(IdentityStatus.UNKNOWN_NUMBER, phone)
        company = await self._repository.get_active_company(profile.id)
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


async def authenticate_user_by_whatsapp(
    store: WhatsAppRepository | AsyncClient, phone_number: str
) -> UUID | None:
    """The seed's entry point: the Fizko user id for a WhatsApp number, or None.

    `store` is the service's repository, or — as in the seed — a Supabase async client
    (service-role), which is wrapped in the Supabase repository.
    """
    if isinstance(store, AsyncClient):
        from app.repositories.supabase_repository import SupabaseWhatsAppRepository

        store = SupabaseWhatsAppRepository(store)
    phone = try_normalize_phone(phone_number)
    if phone is None:
        return None
    profile = await store.find_profile_by_phone(phone)
    return profile.id if profile else None
