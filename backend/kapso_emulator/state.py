"""In-memory state of the emulated Kapso project, optionally persisted to a JSON file."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kapso_emulator.config import PhoneNumberConfig
from kapso_emulator.models import (
    Contact,
    Conversation,
    ConversationStatus,
    Delivery,
    Media,
    Message,
    Note,
    OutboxEntry,
    Template,
    TemplateStatus,
)

logger = logging.getLogger(__name__)

# Deliveries are kept for inspection only; an emulator left running should not grow forever.
MAX_DELIVERIES = 2000


class Clock:
    """Real time plus an offset, so the control API can move time forward (24-hour window)."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset_seconds = offset_seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_seconds)

    def advance(self, seconds: float) -> datetime:
        self.offset_seconds += seconds
        return self.now()


class Snapshot(BaseModel):
    """What the state file holds."""

    model_config = ConfigDict(extra="forbid")

    seq: int = 0
    clock_offset_seconds: float = 0.0
    messages: list[Message] = Field(default_factory=list)
    conversations: list[Conversation] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    notes: list[Note] = Field(default_factory=list)
    templates: list[Template] = Field(default_factory=list)
    media: list[Media] = Field(default_factory=list)
    outbox: list[OutboxEntry] = Field(default_factory=list)


def new_wamid() -> str:
    """A message id shaped like Meta's (`wamid.` + base64-ish text)."""
    return "wamid.HBgL" + secrets.token_urlsafe(30).replace("-", "A").replace("_", "B") + "AA=="


def new_numeric_id() -> str:
    """Meta-style numeric object id (media, templates)."""
    return str(10**15 + secrets.randbelow(9 * 10**15))


def new_uuid() -> str:
    return str(uuid.uuid4())


def digits(phone: str) -> str:
    """`+56 9 1234-5678` → `56912345678` (WhatsApp ids are digits only)."""
    return "".join(ch for ch in phone if ch.isdigit())


class EmulatorState:
    """Every record of the emulated project, with the lookups the endpoints need."""

    def __init__(self, clock: Clock, state_file: Path | None = None) -> None:
        self.clock = clock
        self.state_file = state_file
        self.seq = 0
        self.messages: dict[str, Message] = {}
        self.conversations: dict[str, Conversation] = {}
        self.contacts: dict[str, Contact] = {}
        self.notes: dict[str, Note] = {}
        self.templates: dict[str, Template] = {}
        self.media: dict[str, Media] = {}
        self.outbox: list[OutboxEntry] = []
        self.deliveries: dict[str, Delivery] = {}
        # Each conversation's messages in `seq` order, so rendering a conversation (every webhook
        # does) does not scan every message; kept by `add_message`, `reset` and `_load`.
        self._conversation_messages: dict[str, list[Message]] = {}
        # Kept in step with the config by the emulator, so renderers can find a number's details.
        self.phone_numbers: list[PhoneNumberConfig] = []
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # -- bookkeeping ---------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def reset(self) -> None:
        self.seq = 0
        self.clock.offset_seconds = 0.0
        for table in (
            self.messages,
            self.conversations,
            self.contacts,
            self.notes,
            self.templates,
            self.media,
            self.deliveries,
        ):
            table.clear()
        self._conversation_messages.clear()
        self.outbox.clear()
        self.save()

    def seed_templates(self, business_account_ids: list[str]) -> None:
        """Meta gives every new account an approved `hello_world`; so does the emulator."""
        for waba_id in business_account_ids:
            if self.find_template(waba_id, "hello_world", "en_US") is None:
                template = Template(
                    seq=self.next_seq(),
                    id=new_numeric_id(),
                    business_account_id=waba_id,
                    name="hello_world",
                    language="en_US",
                    category="UTILITY",
                    status=TemplateStatus.APPROVED,
                    components=[
                        {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                        {
                            "type": "BODY",
                            "text": "Welcome and congratulations!! This message demonstrates "
                            "your ability to send a WhatsApp message notification.",
                        },
                        {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
                    ],
                    created_at=self.clock.now(),
                )
                self.templates[template.id] = template

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            seq=self.seq,
            clock_offset_seconds=self.clock.offset_seconds,
            messages=list(self.messages.values()),
            conversations=list(self.conversations.values()),
            contacts=list(self.contacts.values()),
            notes=list(self.notes.values()),
            templates=list(self.templates.values()),
            media=list(self.media.values()),
            outbox=list(self.outbox),
        )

    def save(self) -> None:
        """Write the state file (if any); called after every change, which is cheap at this size."""
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(self.snapshot().model_dump_json(), encoding="utf-8")
        tmp.replace(self.state_file)

    def _load(self, path: Path) -> None:
        try:
            snap = Snapshot.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError:
            logger.warning("state file %s is unreadable; starting empty", path)
            return
        self.seq = snap.seq
        self.clock.offset_seconds = snap.clock_offset_seconds
        self.messages = {m.id: m for m in snap.messages}
        for message in sorted(snap.messages, key=lambda m: m.seq):
            self._conversation_messages.setdefault(message.conversation_id, []).append(message)
        self.conversations = {c.id: c for c in snap.conversations}
        self.contacts = {c.id: c for c in snap.contacts}
        self.notes = {n.id: n for n in snap.notes}
        self.templates = {t.id: t for t in snap.templates}
        self.media = {m.id: m for m in snap.media}
        self.outbox = list(snap.outbox)

    # -- lookups -------------------------------------------------------------------------------

    def active_conversation(self, phone_number_id: str, wa_id: str) -> Conversation | None:
        phone = "+" + wa_id
        for conv in self.conversations.values():
            if (
                conv.phone_number_id == phone_number_id
                and conv.phone_number == phone
                and conv.status is ConversationStatus.ACTIVE
            ):
                return conv
        return None

    def last_inbound_at(self, phone_number_id: str, wa_id: str) -> datetime | None:
        """When this user last wrote to this number, across all their conversations."""
        phone = "+" + wa_id
        times = [
            conv.last_inbound_at
            for conv in self.conversations.values()
            if conv.phone_number_id == phone_number_id
            and conv.phone_number == phone
            and conv.last_inbound_at is not None
        ]
        return max(times) if times else None

    def find_contact(self, identifier: str) -> Contact | None:
        """By uuid, or by phone number in any spelling."""
        if identifier in self.contacts:
            return self.contacts[identifier]
        wa_id = digits(identifier)
        if not wa_id:
            return None
        for contact in self.contacts.values():
            if contact.wa_id == wa_id:
                return contact
        return None

    def find_template(self, waba_id: str, name: str, language: str | None) -> Template | None:
        for template in self.templates.values():
            if (
                template.business_account_id == waba_id
                and template.name == name
                and (language is None or template.language == language)
            ):
                return template
        return None

    def find_media_by_token(self, token: str) -> Media | None:
        for media in self.media.values():
            if secrets.compare_digest(media.download_token, token):
                return media
        return None

    def add_message(self, message: Message) -> None:
        """Record a new message (its `seq` is the newest)."""
        self.messages[message.id] = message
        self._conversation_messages.setdefault(message.conversation_id, []).append(message)

    def conversation_messages(self, conversation_id: str) -> list[Message]:
        return list(self._conversation_messages.get(conversation_id, ()))

    def add_delivery(self, delivery: Delivery) -> None:
        self.deliveries[delivery.id] = delivery
        if len(self.deliveries) > MAX_DELIVERIES:
            # Deliveries are added in `seq` order, so the first key is the oldest.
            del self.deliveries[next(iter(self.deliveries))]
