"""The emulated Kapso project: records inbound and outbound messages and emits their webhooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from kapso_emulator.config import (
    DEFAULT_WEBHOOK_CONCURRENCY,
    ConfigPatch,
    EmulatorConfig,
    PhoneNumberConfig,
    WindowMode,
)
from kapso_emulator.errors import GraphError
from kapso_emulator.models import (
    Contact,
    Conversation,
    ConversationStatus,
    Direction,
    Fault,
    Media,
    Message,
    OutboxEntry,
    StatusChange,
)
from kapso_emulator.render import (
    conversation_event_v1,
    conversation_event_v2,
    message_webhook_v1,
    message_webhook_v2,
)
from kapso_emulator.state import Clock, EmulatorState, new_numeric_id, new_uuid, new_wamid
from kapso_emulator.webhooks import MESSAGE_RECEIVED, WebhookDispatcher

WINDOW = timedelta(hours=24)
INACTIVITY_END = timedelta(hours=24)

ERROR_TITLES = {
    131047: (
        "Re-engagement message",
        "More than 24 hours have passed since the recipient last replied to the sender number.",
    ),
    131026: ("Message undeliverable", "Unable to deliver message."),
}


@dataclass(frozen=True)
class InboundSpec:
    """What a simulated user sends (built by the control API from its request body)."""

    from_phone: str
    type: str
    body: dict[str, Any]
    content: str
    contact_name: str | None
    phone_number_id: str
    context_id: str | None = None
    media_id: str | None = None


class Emulator:
    """Owns config, clock, state and the webhook dispatcher; one per app."""

    def __init__(
        self,
        config: EmulatorConfig,
        state_file: Path | None = None,
        *,
        webhook_concurrency: int = DEFAULT_WEBHOOK_CONCURRENCY,
    ) -> None:
        self.config = config
        self.clock = Clock()
        self.state = EmulatorState(self.clock, state_file)
        self.webhooks = WebhookDispatcher(
            self.state, lambda: self.config, concurrency=webhook_concurrency
        )
        self._sync_phone_numbers()
        # Rate-limit windows: api key → (window start minute, count).
        self.rate_windows: dict[str, tuple[int, int]] = {}
        # Injected failures, applied by the gateway in front of the Kapso endpoints.
        self.faults: list[Fault] = []

    def _sync_phone_numbers(self) -> None:
        self.state.phone_numbers = self.config.phone_numbers
        self.state.seed_templates(
            sorted({p.business_account_id for p in self.config.phone_numbers})
        )

    def apply(self, patch: ConfigPatch) -> EmulatorConfig:
        """Apply a partial config change from the control API."""
        values = self.config.model_dump()
        values.update(patch.model_dump(include=patch.model_fields_set))
        self.config = EmulatorConfig.model_validate(values)
        self._sync_phone_numbers()
        return self.config

    async def reset(self) -> None:
        await self.webhooks.cancel_all()
        self.state.reset()
        self.rate_windows.clear()
        self.faults.clear()
        self._sync_phone_numbers()

    def public_url(self, request_base: str) -> str:
        return (self.config.public_url or request_base).rstrip("/")

    # -- lookups -------------------------------------------------------------------------------

    def phone(self, phone_number_id: str) -> PhoneNumberConfig:
        for phone in self.config.phone_numbers:
            if phone.phone_number_id == phone_number_id:
                return phone
        raise GraphError(
            f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation.",
            code=100,
            error_subcode=33,
            error_type="GraphMethodException",
        )

    def waba_ids(self) -> set[str]:
        return {p.business_account_id for p in self.config.phone_numbers}

    # -- conversations and contacts --------------------------------------------------------------

    def _conversation_for(
        self, phone_number_id: str, wa_id: str, contact_name: str | None
    ) -> tuple[Conversation, bool]:
        """The user's active conversation, opened (with its created event) if there is none."""
        conv = self.state.active_conversation(phone_number_id, wa_id)
        if conv is not None:
            if contact_name:
                conv.contact_name = contact_name
            return conv, False
        now = self.clock.now()
        contact = self.state.find_contact(wa_id)
        conv = Conversation(
            seq=self.state.next_seq(),
            id=new_uuid(),
            phone_number="+" + wa_id,
            phone_number_id=phone_number_id,
            created_at=now,
            updated_at=now,
            last_active_at=now,
            contact_name=contact_name or (contact.profile_name if contact else None),
        )
        self.state.conversations[conv.id] = conv
        return conv, True

    def _emit_conversation(self, event: str, conv: Conversation) -> None:
        self.webhooks.emit(
            event,
            v2=lambda: conversation_event_v2(self.state, conv),
            v1=lambda: conversation_event_v1(self.state, conv),
        )

    def _touch_contact(self, wa_id: str, profile_name: str | None) -> Contact:
        contact = self.state.find_contact(wa_id)
        now = self.clock.now()
        if contact is None:
            contact = Contact(
                seq=self.state.next_seq(),
                id=new_uuid(),
                wa_id=wa_id,
                profile_name=profile_name,
                created_at=now,
                updated_at=now,
            )
            self.state.contacts[contact.id] = contact
        elif profile_name and contact.profile_name != profile_name:
            contact.profile_name = profile_name
            contact.updated_at = now
        return contact

    def end_conversation(self, conv: Conversation) -> None:
        if conv.status is ConversationStatus.ENDED:
            return
        conv.status = ConversationStatus.ENDED
        conv.updated_at = self.clock.now()
        self._emit_conversation("whatsapp.conversation.ended", conv)
        self.state.save()

    def reopen_conversation(self, conv: Conversation) -> None:
        conv.status = ConversationStatus.ACTIVE
        conv.updated_at = self.clock.now()
        self.state.save()

    def advance_clock(self, seconds: float) -> None:
        """Move time; conversations idle for 24 h end, as Kapso ends them."""
        now = self.clock.advance(seconds)
        for conv in list(self.state.conversations.values()):
            if conv.status is ConversationStatus.ACTIVE and now - conv.last_active_at >= (
                INACTIVITY_END
            ):
                self.end_conversation(conv)
        self.state.save()

    # -- media ---------------------------------------------------------------------------------

    def store_media(
        self, phone_number_id: str, data: bytes, mime_type: str, filename: str | None
    ) -> Media:
        media = Media(
            seq=self.state.next_seq(),
            id=new_numeric_id(),
            phone_number_id=phone_number_id,
            mime_type=mime_type,
            sha256=hashlib.sha256(data).hexdigest(),
            file_size=len(data),
            filename=filename,
            data_b64=base64.b64encode(data).decode("ascii"),
            download_token=secrets.token_urlsafe(24),
            created_at=self.clock.now(),
        )
        self.state.media[media.id] = media
        self.state.save()
        return media

    # -- inbound -------------------------------------------------------------------------------

    def receive(self, spec: InboundSpec, public_url: str) -> Message:
        """A user writes to the business: record it and deliver `whatsapp.message.received`."""
        self.phone(spec.phone_number_id)
        wa_id = "".join(ch for ch in spec.from_phone if ch.isdigit())
        self._touch_contact(wa_id, spec.contact_name)
        conv, is_new = self._conversation_for(spec.phone_number_id, wa_id, spec.contact_name)
        now = self.clock.now()
        message = Message(
            seq=self.state.next_seq(),
            id=new_wamid(),
            kapso_id=new_uuid(),
            direction=Direction.INBOUND,
            type=spec.type,
            phone_number_id=spec.phone_number_id,
            user_wa_id=wa_id,
            conversation_id=conv.id,
            timestamp=now,
            body=spec.body,
            context={
                "from": self.phone(spec.phone_number_id).display_phone_number.lstrip("+"),
                "id": spec.context_id,
            }
            if spec.context_id
            else None,
            status="received",
            contact_name=conv.contact_name,
            media_id=spec.media_id,
            content=spec.content,
            processing_status="pending",
        )
        self.state.add_message(message)
        conv.last_inbound_at = now
        conv.last_active_at = now
        conv.updated_at = now
        conv.typing_until = None
        if is_new:
            self._emit_conversation("whatsapp.conversation.created", conv)
        self.webhooks.emit(
            MESSAGE_RECEIVED,
            v2=lambda: message_webhook_v2(
                self.state, message, public_url, is_new_conversation=is_new, with_statuses=False
            ),
            v1=lambda: message_webhook_v1(self.state, message, public_url),
            conversation_id=conv.id,
        )
        self.state.save()
        return message

    # -- outbound ------------------------------------------------------------------------------

    def check_window(self, phone_number_id: str, wa_id: str) -> bool:
        """Whether free-form messages may go to this user now (24-hour customer-service window)."""
        if self.config.window_mode is WindowMode.OFF:
            return True
        last = self.state.last_inbound_at(phone_number_id, wa_id)
        return last is not None and self.clock.now() - last < WINDOW

    def record_send(
        self,
        *,
        phone_number_id: str,
        wa_id: str,
        msg_type: str,
        body: dict[str, Any],
        content: str,
        request: dict[str, Any],
        biz_opaque: str | None,
        context_id: str | None,
        media_id: str | None,
        fail_with: int | None,
        public_url: str,
        origin: str = "cloud_api",
    ) -> Message:
        """An accepted send: record it, put it in the outbox, schedule its status events.

        `origin="business_app"` is a person answering from the WhatsApp Business app: Kapso
        echoes it as `whatsapp.message.sent`, but it is not something the service sent.
        """
        conv, is_new = self._conversation_for(phone_number_id, wa_id, None)
        now = self.clock.now()
        message = Message(
            seq=self.state.next_seq(),
            id=new_wamid(),
            kapso_id=new_uuid(),
            direction=Direction.OUTBOUND,
            type=msg_type,
            phone_number_id=phone_number_id,
            user_wa_id=wa_id,
            conversation_id=conv.id,
            timestamp=now,
            body=body,
            context={"id": context_id} if context_id else None,
            status="pending",
            biz_opaque_callback_data=biz_opaque,
            media_id=media_id,
            content=content,
            origin=origin,
        )
        self.state.add_message(message)
        conv.last_outbound_at = now
        conv.last_active_at = now
        conv.updated_at = now
        conv.typing_until = None
        if origin == "cloud_api":
            self.state.outbox.append(
                OutboxEntry(
                    seq=self.state.next_seq(),
                    kind="message",
                    message_id=message.id,
                    phone_number_id=phone_number_id,
                    to=wa_id,
                    request=request,
                    at=now,
                )
            )
        if is_new:
            self._emit_conversation("whatsapp.conversation.created", conv)
        if fail_with is None and wa_id in self.config.undeliverable_numbers:
            fail_with = 131026
        self.webhooks.spawn(self._progress(message, is_new, fail_with, public_url))
        self.state.save()
        return message

    async def _progress(
        self, message: Message, is_new: bool, fail_with: int | None, public_url: str
    ) -> None:
        """sent → delivered → read (or failed), each after its configured delay."""
        delays = self.config.status_delays
        steps: list[tuple[str, float]] = [("sent", delays.sent)]
        if fail_with is not None:
            steps.append(("failed", delays.delivered))
        else:
            steps.append(("delivered", delays.delivered))
            if delays.read is not None:
                steps.append(("read", delays.read))
        elapsed = 0.0
        for status, at in steps:
            wait = max(0.0, at - elapsed)
            elapsed = max(elapsed, at)
            await asyncio.sleep(self.config.scaled(wait))
            if message.id not in self.state.messages:
                return  # reset while waiting
            errors = None
            if status == "failed" and fail_with is not None:
                title, detail = ERROR_TITLES.get(fail_with, ("Error", "Message failed."))
                errors = [{"code": fail_with, "title": title, "message": detail}]
            self.set_status(message, status, errors, public_url, is_new=is_new and status == "sent")

    def set_status(
        self,
        message: Message,
        status: str,
        errors: list[dict[str, Any]] | None,
        public_url: str,
        *,
        is_new: bool = False,
    ) -> None:
        """Record a status change and deliver its event (`whatsapp.message.<status>`)."""
        message.status = status
        message.statuses = [
            *message.statuses,
            StatusChange(status=status, timestamp=self.clock.now(), errors=errors),
        ]
        self.webhooks.emit(
            f"whatsapp.message.{status}",
            v2=lambda: message_webhook_v2(
                self.state, message, public_url, is_new_conversation=is_new, with_statuses=True
            ),
            v1=lambda: message_webhook_v1(self.state, message, public_url),
            conversation_id=message.conversation_id,
        )
        self.state.save()

    def record_read_receipt(
        self, phone_number_id: str, message: Message, request: dict[str, Any]
    ) -> None:
        """The business marked an inbound message read (maybe showing "typing…")."""
        now = self.clock.now()
        message.status = "read"
        conv = self.state.conversations.get(message.conversation_id)
        if conv is not None and request.get("typing_indicator"):
            conv.typing_until = now + timedelta(seconds=25)
        self.state.outbox.append(
            OutboxEntry(
                seq=self.state.next_seq(),
                kind="read" if not request.get("typing_indicator") else "read+typing",
                message_id=message.id,
                phone_number_id=phone_number_id,
                to=message.user_wa_id,
                request=request,
                at=now,
            )
        )
        self.state.save()
