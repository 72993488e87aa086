"""Who may reach which conversation: a user only their companies', the service any."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from app.core.errors import NotFoundError, UnprocessableError
from app.core.jwt_verifier import AuthenticatedPrincipal
from app.core.phone import try_normalize_phone
from app.repositories.conversations import ConversationStore
from app.repositories.directory import DirectoryStore
from app.repositories.models import Conversation
from app.services.whatsapp.send_requests import ConversationSelector


@dataclass(frozen=True, slots=True)
class SendTarget:
    """Where a send goes, after authorisation."""

    phone: str
    business_phone_number_id: str | None
    conversation: Conversation | None
    company_id: UUID | None

    @property
    def kapso_conversation_id(self) -> str | None:
        return self.conversation.metadata.kapso_conversation_id if self.conversation else None


def _not_found() -> NotFoundError:
    # The same answer whether it does not exist or belongs to another company: no hint.
    return NotFoundError("No such conversation or recipient", code="conversation_not_found")


class ConversationAccess:
    def __init__(
        self,
        directory: DirectoryStore,
        conversations: ConversationStore,
        default_phone_number_id: str | None,
    ) -> None:
        self._directory = directory
        self._conversations = conversations
        self._default_phone_number_id = default_phone_number_id

    async def company_ids(self, principal: AuthenticatedPrincipal) -> set[UUID] | None:
        """The companies the caller may act for; None means any (the service_role key)."""
        if principal.is_service_role:
            return None
        if principal.user_id is None:
            return set()
        return {c.id for c in await self._directory.list_user_companies(principal.user_id)}

    async def conversation(
        self, principal: AuthenticatedPrincipal, kapso_conversation_id: str
    ) -> Conversation:
        """A stored WhatsApp conversation the caller may see, by Kapso's id; else 404."""
        conversation = await self._conversations.find_conversation_by_kapso_id(
            kapso_conversation_id
        )
        if conversation is None:
            raise _not_found()
        allowed = await self.company_ids(principal)
        if allowed is not None and conversation.metadata.company_id not in allowed:
            raise _not_found()
        return conversation

    async def target(
        self,
        principal: AuthenticatedPrincipal,
        selector: ConversationSelector,
        whatsapp_config_id: str | None,
    ) -> SendTarget:
        """Resolve a selector for a caller: `conversation_id` wins; else the phone number."""
        if selector.conversation_id is not None:
            conversation = await self.conversation(principal, selector.conversation_id)
            phone = conversation.metadata.phone_number
            if phone is None:
                raise _not_found()
            return SendTarget(
                phone=phone,
                business_phone_number_id=whatsapp_config_id
                or conversation.metadata.business_phone_number_id
                or self._default_phone_number_id,
                conversation=conversation,
                company_id=conversation.metadata.company_id,
            )
        phone = try_normalize_phone(selector.phone_number)
        if phone is None:
            raise UnprocessableError(
                "not a phone number", field="conversation_selector.phone_number"
            )
        business = whatsapp_config_id or self._default_phone_number_id
        allowed = await self.company_ids(principal)
        latest = await self._conversations.find_latest_conversation_for_phone(
            phone, business_phone_number_id=business
        )
        if latest is not None and (allowed is None or latest.metadata.company_id in allowed):
            return SendTarget(phone, business, latest, latest.metadata.company_id)
        company_id = await self._recipient_company(phone, allowed)
        return SendTarget(phone, business, None, company_id)

    async def _recipient_company(self, phone: str, allowed: set[UUID] | None) -> UUID | None:
        """By phone, a user may reach only a profile of one of their companies."""
        profile = await self._directory.find_profile_by_phone(phone)
        if allowed is None:
            return None
        if profile is None:
            raise _not_found()
        shared = {c.id for c in await self._directory.list_user_companies(profile.id)} & allowed
        if not shared:
            raise _not_found()
        return sorted(shared)[0]
