"""Records → the JSON shapes Kapso returns and sends (Meta-shaped messages, Kapso extras, v1/v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kapso_emulator.config import PhoneNumberConfig
from kapso_emulator.models import (
    Contact,
    Conversation,
    Direction,
    Media,
    Message,
    Note,
    Template,
)
from kapso_emulator.state import EmulatorState

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def unix(moment: datetime) -> str:
    return str(int(moment.timestamp()))


def media_download_url(public_url: str, media: Media) -> str:
    return f"{public_url.rstrip('/')}/meta/whatsapp/media_download?token={media.download_token}"


def media_fields(state: EmulatorState, message: Message, public_url: str) -> dict[str, Any]:
    """`media_url` and `media_data` of a message that carries media (empty otherwise)."""
    if message.type not in MEDIA_TYPES:
        return {}
    media = state.media.get(message.media_id or "")
    if media is not None:
        url = media_download_url(public_url, media)
        return {
            "media_url": url,
            "media_data": {
                "url": url,
                "filename": media.filename,
                "content_type": media.mime_type,
                "byte_size": media.file_size,
            },
        }
    link = message.body.get("link")
    return {"media_url": link} if isinstance(link, str) else {}


def message_kapso(
    state: EmulatorState, message: Message, public_url: str, *, for_webhook: bool
) -> dict[str, Any]:
    """The `kapso` object of a message (history records carry more than webhooks do)."""
    kapso: dict[str, Any] = {
        "direction": message.direction.value,
        "status": message.status,
    }
    if message.processing_status is not None:
        kapso["processing_status"] = message.processing_status
    kapso["origin"] = message.origin
    kapso["has_media"] = message.type in MEDIA_TYPES
    kapso["content"] = message.content
    kapso.update(media_fields(state, message, public_url))
    if not for_webhook:
        conv = state.conversations.get(message.conversation_id)
        kapso["phone_number"] = conv.phone_number if conv else "+" + message.user_wa_id
        kapso["whatsapp_conversation_id"] = message.conversation_id
        kapso["contact_name"] = message.contact_name or (conv.contact_name if conv else None)
        kapso["message_type_data"] = message.body
    return kapso


def status_objects(message: Message) -> list[dict[str, Any]]:
    """Meta's raw status objects, oldest first, each echoing `biz_opaque_callback_data`."""
    result = []
    for change in message.statuses:
        raw: dict[str, Any] = {
            "id": message.id,
            "status": change.status,
            "timestamp": unix(change.timestamp),
            "recipient_id": message.user_wa_id,
        }
        if message.biz_opaque_callback_data is not None:
            raw["biz_opaque_callback_data"] = message.biz_opaque_callback_data
        if change.errors:
            raw["errors"] = change.errors
        result.append(raw)
    return result


def message_meta(message: Message) -> dict[str, Any]:
    """The Meta-shaped part of a message record."""
    record: dict[str, Any] = {
        "id": message.id,
        "timestamp": unix(message.timestamp),
        "type": message.type,
    }
    if message.direction is Direction.INBOUND:
        record["from"] = message.user_wa_id
    else:
        record["to"] = message.user_wa_id
    if message.body:
        record[message.type] = message.body
    if message.context:
        record["context"] = message.context
    return record


def select_kapso(kapso: dict[str, Any], fields: str | None) -> dict[str, Any] | None:
    """Apply `fields=kapso(default)`, `kapso(*)` or `kapso(a,b)`; None when not requested."""
    if not fields or "kapso" not in fields:
        return None
    start = fields.find("kapso(")
    if start < 0:
        return kapso
    inner = fields[start + len("kapso(") :].split(")", 1)[0].strip()
    if inner in ("", "*", "default"):
        return kapso
    wanted = {name.strip() for name in inner.split(",")}
    return {key: value for key, value in kapso.items() if key in wanted}


def message_record(
    state: EmulatorState, message: Message, public_url: str, *, fields: str | None
) -> dict[str, Any]:
    """A message as message history returns it."""
    record = message_meta(message)
    kapso = select_kapso(message_kapso(state, message, public_url, for_webhook=False), fields)
    if kapso is not None:
        record["kapso"] = kapso
    return record


def conversation_record(state: EmulatorState, conv: Conversation) -> dict[str, Any]:
    messages = state.conversation_messages(conv.id)
    last = messages[-1] if messages else None
    phone = next(
        (p for p in state.phone_numbers if p.phone_number_id == conv.phone_number_id), None
    )
    return {
        "id": conv.id,
        "phone_number": conv.phone_number,
        "phone_number_id": conv.phone_number_id,
        "status": conv.status.value,
        "last_active_at": iso(conv.last_active_at),
        "created_at": iso(conv.created_at),
        "updated_at": iso(conv.updated_at),
        "whatsapp_config_id": phone.whatsapp_config_id if phone else None,
        "metadata": conv.metadata,
        "kapso": {
            "contact_name": conv.contact_name,
            "messages_count": len(messages),
            "last_message_id": last.id if last else None,
            "last_message_type": last.type if last else None,
            "last_message_timestamp": iso(last.timestamp) if last else None,
            "last_message_text": last.content if last else None,
            "last_inbound_at": iso(conv.last_inbound_at),
            "last_outbound_at": iso(conv.last_outbound_at),
        },
    }


def contact_record(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "wa_id": contact.wa_id,
        "phone_number": "+" + contact.wa_id,
        "profile_name": contact.profile_name,
        "display_name": contact.display_name,
        "customer_id": contact.customer_id,
        "business_scoped_user_id": None,
        "metadata": contact.metadata,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


def note_record(note: Note) -> dict[str, Any]:
    return {
        "id": note.id,
        "name": note.name,
        "content": note.content,
        "metadata": note.metadata,
        "created_at": iso(note.created_at),
        "updated_at": iso(note.updated_at),
    }


def template_record(template: Template) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "language": template.language,
        "status": template.status.value,
        "category": template.category,
        "parameter_format": template.parameter_format,
        "components": template.components,
    }


def phone_number_record(phone: PhoneNumberConfig) -> dict[str, Any]:
    return {
        "id": phone.whatsapp_config_id,
        "phone_number_id": phone.phone_number_id,
        "business_account_id": phone.business_account_id,
        "display_phone_number": phone.display_phone_number,
        "verified_name": phone.verified_name,
        "quality_rating": phone.quality_rating,
        "status": phone.status,
        "throughput_tier": phone.throughput_tier,
    }


# -- webhook bodies ----------------------------------------------------------------------------


def conversation_webhook(state: EmulatorState, conv: Conversation) -> dict[str, Any]:
    """The `conversation` object inside webhook bodies (v2)."""
    full = conversation_record(state, conv)
    full.pop("whatsapp_config_id", None)
    return full


def message_webhook_v2(
    state: EmulatorState,
    message: Message,
    public_url: str,
    *,
    is_new_conversation: bool,
    with_statuses: bool,
) -> dict[str, Any]:
    record = message_meta(message)
    kapso = message_kapso(state, message, public_url, for_webhook=True)
    if with_statuses:
        # A status event carries the status object that caused it, as Kapso forwards Meta's.
        kapso["statuses"] = status_objects(message)[-1:]
    record["kapso"] = kapso
    conv = state.conversations[message.conversation_id]
    return {
        "message": record,
        "conversation": conversation_webhook(state, conv),
        "is_new_conversation": is_new_conversation,
        "phone_number_id": message.phone_number_id,
    }


def _whatsapp_config_v1(phone: PhoneNumberConfig | None, phone_number_id: str) -> dict[str, Any]:
    if phone is None:
        return {"id": None, "display_phone_number": None, "phone_number_id": phone_number_id}
    return {
        "id": phone.whatsapp_config_id,
        "display_phone_number": phone.display_phone_number,
        "phone_number_id": phone.phone_number_id,
    }


def _conversation_v1(conv: Conversation, phone: PhoneNumberConfig | None) -> dict[str, Any]:
    return {
        "id": conv.id,
        "phone_number": conv.phone_number,
        "status": conv.status.value,
        "contact_name": conv.contact_name,
        "whatsapp_config_id": phone.whatsapp_config_id if phone else None,
        "last_active_at": iso(conv.last_active_at),
        "created_at": iso(conv.created_at),
    }


def _phone(state: EmulatorState, phone_number_id: str) -> PhoneNumberConfig | None:
    return next((p for p in state.phone_numbers if p.phone_number_id == phone_number_id), None)


def message_webhook_v1(state: EmulatorState, message: Message, public_url: str) -> dict[str, Any]:
    """The legacy (v1) body: Kapso's own message record plus `whatsapp_config`."""
    conv = state.conversations[message.conversation_id]
    phone = _phone(state, message.phone_number_id)
    record: dict[str, Any] = {
        "id": message.kapso_id,
        "whatsapp_message_id": message.id,
        "message_type": message.type,
        "content": message.content,
        "direction": message.direction.value,
        "status": message.status,
        "phone_number": conv.phone_number,
        "has_media": message.type in MEDIA_TYPES,
        "origin": message.origin,
        "created_at": iso(message.timestamp),
    }
    media = media_fields(state, message, public_url)
    if "media_url" in media:
        record["media_url"] = media["media_url"]
    return {
        "message": record,
        "conversation": _conversation_v1(conv, phone),
        "whatsapp_config": _whatsapp_config_v1(phone, message.phone_number_id),
        "whatsapp_config_id": phone.whatsapp_config_id if phone else None,
    }


def conversation_event_v2(state: EmulatorState, conv: Conversation) -> dict[str, Any]:
    return {
        "conversation": conversation_webhook(state, conv),
        "phone_number_id": conv.phone_number_id,
    }


def conversation_event_v1(state: EmulatorState, conv: Conversation) -> dict[str, Any]:
    phone = _phone(state, conv.phone_number_id)
    return {
        "conversation": _conversation_v1(conv, phone),
        "whatsapp_config": _whatsapp_config_v1(phone, conv.phone_number_id),
        "whatsapp_config_id": phone.whatsapp_config_id if phone else None,
    }
