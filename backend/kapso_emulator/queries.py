"""Filters shared by the Meta-proxy and Platform listings of messages and conversations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kapso_emulator.models import Conversation, Message
from kapso_emulator.render import MEDIA_TYPES
from kapso_emulator.state import EmulatorState, digits


@dataclass(frozen=True)
class MessageFilter:
    phone_number_id: str | None = None
    conversation_id: str | None = None
    direction: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    phone_number: str | None = None
    message_type: str | None = None
    has_media: bool | None = None

    def matches(self, message: Message) -> bool:
        checks = (
            self.phone_number_id is None or message.phone_number_id == self.phone_number_id,
            self.conversation_id is None or message.conversation_id == self.conversation_id,
            self.direction is None or message.direction.value == self.direction,
            self.status is None or message.status == self.status,
            self.since is None or message.timestamp >= self.since,
            self.until is None or message.timestamp <= self.until,
            self.phone_number is None or digits(self.phone_number) in message.user_wa_id,
            self.message_type is None or message.type == self.message_type,
            self.has_media is None or (message.type in MEDIA_TYPES) == self.has_media,
        )
        return all(checks)


def find_messages(state: EmulatorState, criteria: MessageFilter) -> list[Message]:
    """Matching messages, newest first."""
    found = [m for m in state.messages.values() if criteria.matches(m)]
    return sorted(found, key=lambda m: (m.timestamp, m.seq), reverse=True)


@dataclass(frozen=True)
class ConversationFilter:
    phone_number_id: str | None = None
    status: str | None = None
    # Kapso matches the phone number partially ("5691234" finds "+56912345678").
    phone_number: str | None = None
    last_active_since: datetime | None = None
    last_active_until: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Nobody is ever assigned in the emulator: asking for an assignee finds nothing.
    assigned_user_id: str | None = None

    def matches(self, conv: Conversation) -> bool:
        wanted_digits = digits(self.phone_number) if self.phone_number else None
        checks = (
            self.phone_number_id is None or conv.phone_number_id == self.phone_number_id,
            self.status is None or conv.status.value == self.status,
            wanted_digits is None or wanted_digits in digits(conv.phone_number),
            self.last_active_since is None or conv.last_active_at >= self.last_active_since,
            self.last_active_until is None or conv.last_active_at <= self.last_active_until,
            self.created_after is None or conv.created_at >= self.created_after,
            self.created_before is None or conv.created_at <= self.created_before,
            self.assigned_user_id is None,
        )
        return all(checks)


def find_conversations(state: EmulatorState, criteria: ConversationFilter) -> list[Conversation]:
    """Matching conversations, most recently active first."""
    found = [c for c in state.conversations.values() if criteria.matches(c)]
    return sorted(found, key=lambda c: (c.last_active_at, c.seq), reverse=True)
