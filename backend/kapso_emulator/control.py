"""The control API (`/_emulator/...`): play a user, read the outbox, inject faults, move time."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from kapso_emulator.config import ConfigPatch
from kapso_emulator.deps import EmulatorDep, public_url
from kapso_emulator.emulator import Emulator, InboundSpec
from kapso_emulator.errors import PlatformError
from kapso_emulator.models import (
    ConversationStatus,
    Direction,
    Fault,
    FaultKind,
    Message,
    OutboxEntry,
    TemplateStatus,
)
from kapso_emulator.render import iso, media_fields, message_record
from kapso_emulator.state import digits, new_uuid

router = APIRouter(prefix="/_emulator", tags=["Emulator control"])

# A 1×1 PNG and a one-page PDF: what a simulated user "sends" when no file is given.
SAMPLE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SAMPLE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
SAMPLES: dict[str, tuple[bytes, str, str]] = {
    "image": (SAMPLE_PNG, "image/png", "photo.png"),
    "sticker": (SAMPLE_PNG, "image/webp", "sticker.webp"),
    "document": (SAMPLE_PDF, "application/pdf", "documento.pdf"),
    "audio": (b"OggS\x00fake-voice-note", "audio/ogg", "voice.ogg"),
    "video": (b"\x00\x00\x00\x18ftypmp42fake-video", "video/mp4", "video.mp4"),
}


# -- status and config ------------------------------------------------------------------------


@router.get("/health")
async def health(emulator: EmulatorDep) -> dict[str, Any]:
    """Liveness, and how much background work is pending."""
    return {"ok": True, "pending_tasks": emulator.webhooks.pending}


@router.get("/config")
async def get_config(emulator: EmulatorDep) -> dict[str, Any]:
    """The current configuration."""
    return emulator.config.model_dump(mode="json")


@router.patch("/config")
async def patch_config(patch: ConfigPatch, emulator: EmulatorDep) -> dict[str, Any]:
    """Change webhook URL/secret/version, batching, delays, time scale, approval, limits..."""
    return emulator.apply(patch).model_dump(mode="json")


@router.post("/reset")
async def reset(emulator: EmulatorDep) -> dict[str, bool]:
    """Forget every record, delivery and fault; put the clock back (config is kept)."""
    await emulator.reset()
    return {"ok": True}


# -- playing a user -----------------------------------------------------------------------------


class InboundRequest(BaseModel):
    """A message from a simulated WhatsApp user."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    phone: str = Field(validation_alias=AliasChoices("phone", "from"), min_length=4)
    type: Literal[
        "text", "image", "document", "audio", "video", "sticker", "button_reply", "list_reply"
    ] = "text"
    text: str | None = None
    name: str | None = None
    caption: str | None = None
    filename: str | None = None
    mime_type: str | None = None
    media_base64: str | None = None
    reply_id: str | None = None
    reply_title: str | None = None
    reply_description: str | None = None
    context_message_id: str | None = None
    phone_number_id: str | None = None


def _last_outbound(emulator: Emulator, wa_id: str, msg_type: str) -> Message | None:
    found = [
        m
        for m in emulator.state.messages.values()
        if m.user_wa_id == wa_id and m.direction is Direction.OUTBOUND and m.type == msg_type
    ]
    return max(found, key=lambda m: m.seq) if found else None


def _inbound_spec(body: InboundRequest, emulator: Emulator) -> InboundSpec:
    phone_number_id = body.phone_number_id or emulator.config.phone_numbers[0].phone_number_id
    wa_id = digits(body.phone)
    common: dict[str, Any] = {
        "from_phone": wa_id,
        "contact_name": body.name,
        "phone_number_id": phone_number_id,
        "context_id": body.context_message_id,
    }
    if body.type == "text":
        if not body.text:
            raise PlatformError(422, "text is required for a text message")
        return InboundSpec(type="text", body={"body": body.text}, content=body.text, **common)
    if body.type in ("button_reply", "list_reply"):
        if not body.reply_id or not body.reply_title:
            raise PlatformError(422, "reply_id and reply_title are required for a reply")
        reply: dict[str, Any] = {"id": body.reply_id, "title": body.reply_title}
        if body.type == "list_reply" and body.reply_description:
            reply["description"] = body.reply_description
        if common["context_id"] is None:
            # A reply always quotes the interactive message it answers.
            last = _last_outbound(emulator, wa_id, "interactive")
            common["context_id"] = last.id if last else None
        return InboundSpec(
            type="interactive",
            body={"type": body.type, body.type: reply},
            content=body.reply_title,
            **common,
        )
    sample, sample_mime, sample_name = SAMPLES[body.type]
    if body.media_base64:
        try:
            data = base64.b64decode(body.media_base64, validate=True)
        except (ValueError, binascii.Error) as err:
            raise PlatformError(422, "media_base64 is not valid base64") from err
    else:
        data = sample
    mime = body.mime_type or sample_mime
    filename = body.filename or sample_name
    media = emulator.store_media(phone_number_id, data, mime, filename)
    media_obj: dict[str, Any] = {"id": media.id, "mime_type": mime, "sha256": media.sha256}
    caption = body.caption or body.text
    if caption and body.type in ("image", "video", "document"):
        media_obj["caption"] = caption
    if body.type == "document":
        media_obj["filename"] = filename
    if body.type == "audio":
        media_obj["voice"] = True
    return InboundSpec(
        type=body.type, body=media_obj, content=caption or "", media_id=media.id, **common
    )


@router.post("/inbound", status_code=201)
async def simulate_inbound(
    body: InboundRequest, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Play a user: the message is recorded and `whatsapp.message.received` is delivered."""
    spec = _inbound_spec(body, emulator)
    base = public_url(request, emulator)
    message = emulator.receive(spec, base)
    return {
        "message": message_record(emulator.state, message, base, fields="kapso(*)"),
        "conversation_id": message.conversation_id,
    }


class BusinessAppMessage(BaseModel):
    """A person at the business answering from the WhatsApp Business app (human takeover)."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(min_length=4)
    text: str = Field(min_length=1, max_length=4096)
    phone_number_id: str | None = None


@router.post("/business_app", status_code=201)
async def simulate_business_app(
    body: BusinessAppMessage, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Emit `whatsapp.message.sent` with origin `business_app` (not in the outbox)."""
    phone_number_id = body.phone_number_id or emulator.config.phone_numbers[0].phone_number_id
    emulator.phone(phone_number_id)
    message = emulator.record_send(
        phone_number_id=phone_number_id,
        wa_id=digits(body.phone),
        msg_type="text",
        body={"body": body.text},
        content=body.text,
        request={},
        biz_opaque=None,
        context_id=None,
        media_id=None,
        fail_with=None,
        public_url=public_url(request, emulator),
        origin="business_app",
    )
    return {"id": message.id, "conversation_id": message.conversation_id}


# -- what the service did -------------------------------------------------------------------------


def _outbox_entry(emulator: Emulator, entry: OutboxEntry, base: str) -> dict[str, Any]:
    message = emulator.state.messages.get(entry.message_id or "")
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "at": iso(entry.at),
        "phone_number_id": entry.phone_number_id,
        "to": entry.to,
        "message_id": entry.message_id,
        "request": entry.request,
        "status": message.status if message and entry.kind == "message" else None,
        "content": message.content if message and entry.kind == "message" else None,
    }


@router.get("/outbox")
async def outbox(
    request: Request,
    emulator: EmulatorDep,
    to: str | None = None,
    kind: str | None = None,
    after_seq: int = 0,
    wait_count: int = 0,
    wait_seconds: float = 10.0,
) -> dict[str, Any]:
    """What the service sent, oldest first; waits up to `wait_seconds` for `wait_count` entries."""
    wanted = digits(to) if to else None
    deadline = time.monotonic() + min(wait_seconds, 120.0)

    def matching() -> list[OutboxEntry]:
        return [
            e
            for e in emulator.state.outbox
            if e.seq > after_seq
            and (wanted is None or e.to == wanted)
            and (kind is None or e.kind == kind)
        ]

    found = matching()
    while len(found) < wait_count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        found = matching()
    base = public_url(request, emulator)
    return {"data": [_outbox_entry(emulator, e, base) for e in found]}


@router.get("/deliveries")
async def deliveries(
    emulator: EmulatorDep, event: str | None = None, state: str | None = None
) -> dict[str, Any]:
    """Every webhook delivery with its attempts (status, error, latency), oldest first."""
    found = [
        d.model_dump(mode="json")
        for d in sorted(emulator.state.deliveries.values(), key=lambda d: d.seq)
        if (event is None or d.event == event) and (state is None or d.state == state)
    ]
    return {"data": found}


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_seconds: float = Field(default=30.0, gt=0, le=600)


@router.post("/deliveries/drain")
async def drain(emulator: EmulatorDep, body: DrainRequest | None = None) -> dict[str, Any]:
    """Wait until every pending delivery, retry, batch and status event is done."""
    drained = await emulator.webhooks.drain((body or DrainRequest()).wait_seconds)
    return {"drained": drained, "pending": emulator.webhooks.pending}


# -- faults ---------------------------------------------------------------------------------------


class FaultCreate(BaseModel):
    """`status`: answer `status`/`body` N times; `latency`: add `seconds`; `drop`: close the
    connection; `timeout_after_send`: do the work, then never answer (for `seconds`)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    path: str = "*"
    method: str | None = None
    times: int | None = Field(default=1, ge=1)
    status: int = Field(default=500, ge=100, le=599)
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    seconds: float = Field(default=30.0, ge=0, le=600)


@router.post("/faults", status_code=201)
async def add_fault(body: FaultCreate, emulator: EmulatorDep) -> dict[str, Any]:
    """Inject a fault on requests whose path matches the glob `path` (e.g. `*/messages`)."""
    fault = Fault(id=new_uuid(), **body.model_dump())
    emulator.faults.append(fault)
    return fault.model_dump(mode="json")


@router.get("/faults")
async def list_faults(emulator: EmulatorDep) -> dict[str, Any]:
    """Injected faults and how often each has fired."""
    return {"data": [f.model_dump(mode="json") for f in emulator.faults]}


@router.delete("/faults")
async def clear_faults(emulator: EmulatorDep) -> dict[str, bool]:
    """Remove every fault."""
    emulator.faults.clear()
    return {"ok": True}


@router.delete("/faults/{fault_id}")
async def remove_fault(fault_id: str, emulator: EmulatorDep) -> dict[str, bool]:
    """Remove one fault."""
    before = len(emulator.faults)
    emulator.faults[:] = [f for f in emulator.faults if f.id != fault_id]
    if len(emulator.faults) == before:
        raise PlatformError(404, "Fault not found")
    return {"ok": True}


# -- time and manual state changes ------------------------------------------------------------


class ClockAdvance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 0.0
    minutes: float = 0.0
    hours: float = 0.0


@router.get("/clock")
async def get_clock(emulator: EmulatorDep) -> dict[str, Any]:
    """The emulator's "now" and how far it is ahead of real time."""
    return {"now": iso(emulator.clock.now()), "offset_seconds": emulator.clock.offset_seconds}


@router.post("/clock/advance")
async def advance_clock(body: ClockAdvance, emulator: EmulatorDep) -> dict[str, Any]:
    """Move time forward (closes 24-hour windows; idle conversations end)."""
    emulator.advance_clock(body.seconds + body.minutes * 60 + body.hours * 3600)
    return {"now": iso(emulator.clock.now()), "offset_seconds": emulator.clock.offset_seconds}


@router.post("/conversations/{conversation_id}/end")
async def end_conversation(conversation_id: str, emulator: EmulatorDep) -> dict[str, bool]:
    """End a conversation as an agent would (emits `whatsapp.conversation.ended`)."""
    conv = emulator.state.conversations.get(conversation_id)
    if conv is None:
        raise PlatformError(404, "Conversation not found")
    emulator.end_conversation(conv)
    return {"ok": True}


class TemplateStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: TemplateStatus


@router.post("/templates/{template_id}/status")
async def set_template_status(
    template_id: str, body: TemplateStatusChange, emulator: EmulatorDep
) -> dict[str, Any]:
    """Approve, reject or pause a template (by id or name)."""
    matches = [t for t in emulator.state.templates.values() if template_id in (t.id, t.name)]
    if not matches:
        raise PlatformError(404, "Template not found")
    for template in matches:
        template.status = body.status
    emulator.state.save()
    return {"ok": True, "updated": len(matches)}


class MessageStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["sent", "delivered", "read", "failed"]
    error_code: int | None = None
    error_title: str | None = None
    error_message: str | None = None


@router.post("/messages/{message_id}/status")
async def set_message_status(
    message_id: str, body: MessageStatusChange, request: Request, emulator: EmulatorDep
) -> dict[str, bool]:
    """Emit a status event for an outbound message by hand (e.g. a late `failed`)."""
    message = emulator.state.messages.get(message_id)
    if message is None or message.direction is not Direction.OUTBOUND:
        raise PlatformError(404, "Outbound message not found")
    errors = None
    if body.status == "failed":
        errors = [
            {
                "code": body.error_code or 131026,
                "title": body.error_title or "Message undeliverable",
                "message": body.error_message or "Unable to deliver message.",
            }
        ]
    emulator.set_status(message, body.status, errors, public_url(request, emulator))
    return {"ok": True}


# -- the chat page's data ----------------------------------------------------------------------


def _chat_message(emulator: Emulator, message: Message, base: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": message.id,
        "direction": message.direction.value,
        "type": message.type,
        "content": message.content,
        "status": message.status,
        "at": iso(message.timestamp),
        "media_url": media_fields(emulator.state, message, base).get("media_url"),
    }
    if message.type == "interactive" and message.direction is Direction.OUTBOUND:
        action = message.body.get("action") or {}
        if message.body.get("type") == "button":
            item["buttons"] = [
                {"id": b.get("reply", {}).get("id"), "title": b.get("reply", {}).get("title")}
                for b in action.get("buttons", [])
            ]
        elif message.body.get("type") == "list":
            item["rows"] = [
                {"id": r.get("id"), "title": r.get("title"), "description": r.get("description")}
                for s in action.get("sections", [])
                for r in s.get("rows", [])
            ]
        elif message.body.get("type") == "cta_url":
            item["link"] = action.get("parameters", {})
    if message.type == "template":
        item["template"] = message.body.get("name")
    if message.statuses and message.statuses[-1].errors:
        item["errors"] = message.statuses[-1].errors
    return item


@router.get("/chat")
async def chat(request: Request, emulator: EmulatorDep, phone: str | None = None) -> dict[str, Any]:
    """Conversations (one per user), and the thread of `phone` for the chat page."""
    base = public_url(request, emulator)
    now = emulator.clock.now()
    users: dict[str, dict[str, Any]] = {}
    for conv in sorted(emulator.state.conversations.values(), key=lambda c: c.last_active_at):
        messages = emulator.state.conversation_messages(conv.id)
        users[conv.phone_number] = {
            "phone": conv.phone_number,
            "name": conv.contact_name,
            "status": conv.status.value,
            "last_active_at": iso(conv.last_active_at),
            "last_text": messages[-1].content if messages else "",
            "typing": conv.typing_until is not None and conv.typing_until > now,
        }
    thread: list[dict[str, Any]] = []
    if phone:
        wanted = "+" + digits(phone)
        convs = [c for c in emulator.state.conversations.values() if c.phone_number == wanted]
        for conv in sorted(convs, key=lambda c: c.seq):
            thread.extend(
                _chat_message(emulator, m, base)
                for m in emulator.state.conversation_messages(conv.id)
            )
            if conv.status is ConversationStatus.ENDED:
                thread.append({"direction": "system", "content": "Conversation ended"})
    return {
        "now": datetime.now(UTC).isoformat(),
        "conversations": list(reversed(users.values())),
        "thread": thread,
        "business": emulator.config.phone_numbers[0].verified_name,
    }
