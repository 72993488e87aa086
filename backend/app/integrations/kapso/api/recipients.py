"""Who a send goes to: a Kapso conversation id, or a business number plus a phone."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from app.integrations.kapso.api.conversations import ConversationsAPI
from app.integrations.kapso.exceptions import (
    KapsoConfigurationError,
    KapsoRequestValidationError,
)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A resolved destination: the business number to send from and the WhatsApp id to."""

    phone_number_id: str
    to: str
    conversation_id: str | None = None


def whatsapp_to(phone: str) -> str:
    """WhatsApp's `to` field: the international number as digits, without `+`."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if not digits:
        raise KapsoRequestValidationError("to", "must contain the recipient's phone digits")
    return digits


class RecipientResolver:
    """Resolves conversation ids through the conversations API, caching the answer."""

    def __init__(
        self,
        conversations: ConversationsAPI,
        default_phone_number_id: str | None,
        *,
        cache_size: int = 1024,
    ) -> None:
        self._conversations = conversations
        self.default_phone_number_id = default_phone_number_id
        self._cache: OrderedDict[str, Recipient] = OrderedDict()
        self._cache_size = cache_size

    async def resolve(
        self,
        *,
        conversation_id: str | None,
        phone_number_id: str | None,
        to: str | None,
    ) -> Recipient:
        if to is not None:
            sender = phone_number_id or self.default_phone_number_id
            if not sender:
                raise KapsoConfigurationError(
                    "phone_number_id is required (no default business number configured)"
                )
            return Recipient(sender, whatsapp_to(to), conversation_id)
        if conversation_id is None:
            raise KapsoRequestValidationError(
                "conversation_id", "give a conversation_id, or a phone_number_id and `to`"
            )
        cached = self._cache.get(conversation_id)
        if cached is not None:
            self._cache.move_to_end(conversation_id)
            return cached
        conversation = await self._conversations.get(conversation_id)
        sender = conversation.phone_number_id or phone_number_id or self.default_phone_number_id
        if not conversation.phone_number or not sender:
            raise KapsoRequestValidationError(
                "conversation_id", "the conversation has no phone number to send to"
            )
        recipient = Recipient(sender, whatsapp_to(conversation.phone_number), conversation_id)
        self._cache[conversation_id] = recipient
        # Bounded: a long-running worker must not grow this without limit.
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return recipient
