"""The Platform API: `/platform/v1/whatsapp/...`, `{"data": ...}` responses, wrapped bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from kapso_emulator.deps import EmulatorDep, parse_bool, parse_time, platform_page, public_url
from kapso_emulator.emulator import Emulator
from kapso_emulator.errors import PlatformError
from kapso_emulator.models import Contact, Conversation, ConversationStatus
from kapso_emulator.pagination import PaginationError, offset_page
from kapso_emulator.queries import (
    ConversationFilter,
    MessageFilter,
    find_conversations,
    find_messages,
)
from kapso_emulator.render import (
    contact_record,
    conversation_record,
    message_record,
    phone_number_record,
)
from kapso_emulator.state import digits, new_uuid

router = APIRouter(prefix="/platform/v1/whatsapp", tags=["Platform API"])


# -- conversations ------------------------------------------------------------------------------


@router.get("/conversations")
async def list_conversations(request: Request, emulator: EmulatorDep) -> dict[str, Any]:
    """Conversations with filters (`phone_number` matches partially), most recent first."""
    query = request.query_params
    criteria = ConversationFilter(
        phone_number_id=query.get("phone_number_id"),
        status=query.get("status"),
        phone_number=query.get("phone_number"),
        last_active_since=parse_time(query.get("last_active_since"), "since", graph=False),
        last_active_until=parse_time(query.get("last_active_until"), "until", graph=False),
        created_after=parse_time(query.get("created_after"), "created_after", graph=False),
        created_before=parse_time(query.get("created_before"), "created_before", graph=False),
        assigned_user_id=query.get("assigned_user_id"),
    )
    page, paging = platform_page(request, find_conversations(emulator.state, criteria))
    return {"data": [conversation_record(emulator.state, c) for c in page], "paging": paging}


def _conversation(emulator: Emulator, conversation_id: str) -> Conversation:
    conv = emulator.state.conversations.get(conversation_id)
    if conv is None:
        raise PlatformError(404, "Conversation not found")
    return conv


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, emulator: EmulatorDep) -> dict[str, Any]:
    """One conversation."""
    return {"data": conversation_record(emulator.state, _conversation(emulator, conversation_id))}


class ConversationChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ConversationStatus | None = None
    metadata: dict[str, Any] | None = None


class ConversationUpdate(BaseModel):
    """Platform's wrapped body; the SDK's bare `{status}` is accepted as well."""

    model_config = ConfigDict(extra="forbid")

    whatsapp_conversation: ConversationChanges | None = None
    status: ConversationStatus | None = None


@router.patch("/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: ConversationUpdate, emulator: EmulatorDep
) -> dict[str, Any]:
    """Change a conversation's status (ending it emits `whatsapp.conversation.ended`)."""
    conv = _conversation(emulator, conversation_id)
    changes = body.whatsapp_conversation or ConversationChanges(status=body.status)
    if changes.metadata is not None:
        conv.metadata = changes.metadata
        conv.updated_at = emulator.clock.now()
    if changes.status is ConversationStatus.ENDED:
        emulator.end_conversation(conv)
    elif changes.status is ConversationStatus.ACTIVE:
        emulator.reopen_conversation(conv)
    emulator.state.save()
    return {"data": conversation_record(emulator.state, conv)}


# -- messages -----------------------------------------------------------------------------------


@router.get("/messages")
async def list_messages(request: Request, emulator: EmulatorDep) -> dict[str, Any]:
    """Messages across numbers, newest first, with Kapso's extras."""
    query = request.query_params
    criteria = MessageFilter(
        phone_number_id=query.get("phone_number_id"),
        conversation_id=query.get("conversation_id"),
        phone_number=query.get("phone_number"),
        direction=query.get("direction"),
        status=query.get("status"),
        message_type=query.get("message_type"),
        has_media=parse_bool(query.get("has_media")),
        since=parse_time(query.get("since"), "since", graph=False),
        until=parse_time(query.get("until"), "until", graph=False),
    )
    page, paging = platform_page(request, find_messages(emulator.state, criteria))
    base = public_url(request, emulator)
    fields = query.get("fields") or "kapso(default)"
    return {
        "data": [message_record(emulator.state, m, base, fields=fields) for m in page],
        "paging": paging,
    }


@router.get("/messages/{message_id}")
async def get_message(message_id: str, request: Request, emulator: EmulatorDep) -> dict[str, Any]:
    """One message by wamid."""
    message = emulator.state.messages.get(message_id)
    if message is None:
        raise PlatformError(404, "Message not found")
    base = public_url(request, emulator)
    return {"data": message_record(emulator.state, message, base, fields="kapso(default)")}


# -- contacts -----------------------------------------------------------------------------------


class ContactFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wa_id: str | None = None
    profile_name: str | None = None
    display_name: str | None = None
    customer_id: str | None = None
    metadata: dict[str, Any] | None = None


class ContactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact: ContactFields = Field(default_factory=ContactFields)


@router.get("/contacts")
async def list_contacts(request: Request, emulator: EmulatorDep) -> dict[str, Any]:
    """Contacts, newest first, filtered by `wa_id_contains`, `profile_name_contains`, ..."""
    query = request.query_params
    wa_part = digits(query.get("wa_id_contains") or "")
    name_part = (query.get("profile_name_contains") or "").lower()
    customer_id = query.get("customer_id")
    has_customer = parse_bool(query.get("has_customer"))
    after = parse_time(query.get("created_after"), "created_after", graph=False)
    before = parse_time(query.get("created_before"), "created_before", graph=False)
    found = [
        c
        for c in sorted(emulator.state.contacts.values(), key=lambda c: c.seq, reverse=True)
        if (not wa_part or wa_part in c.wa_id)
        and (not name_part or name_part in (c.profile_name or "").lower())
        and (customer_id is None or c.customer_id == customer_id)
        and (has_customer is None or (c.customer_id is not None) == has_customer)
        and (after is None or c.created_at >= after)
        and (before is None or c.created_at <= before)
    ]
    page, paging = platform_page(request, found)
    return {"data": [contact_record(c) for c in page], "paging": paging}


def _contact(emulator: Emulator, identifier: str) -> Contact:
    contact = emulator.state.find_contact(identifier)
    if contact is None:
        raise PlatformError(404, "Contact not found")
    return contact


@router.post("/contacts", status_code=201)
async def create_contact(body: ContactBody, emulator: EmulatorDep) -> dict[str, Any]:
    """Create a contact from `{"contact": {wa_id, profile_name, ...}}`."""
    fields = body.contact
    wa_id = digits(fields.wa_id or "")
    if not wa_id:
        raise PlatformError(422, "Wa id can't be blank")
    if emulator.state.find_contact(wa_id) is not None:
        raise PlatformError(422, "Wa id has already been taken")
    now = emulator.clock.now()
    contact = Contact(
        seq=emulator.state.next_seq(),
        id=new_uuid(),
        wa_id=wa_id,
        profile_name=fields.profile_name,
        display_name=fields.display_name,
        customer_id=fields.customer_id,
        metadata=fields.metadata or {},
        created_at=now,
        updated_at=now,
    )
    emulator.state.contacts[contact.id] = contact
    emulator.state.save()
    return {"data": contact_record(contact)}


@router.get("/contacts/{identifier}")
async def get_contact(identifier: str, emulator: EmulatorDep) -> dict[str, Any]:
    """A contact by uuid or phone number."""
    return {"data": contact_record(_contact(emulator, identifier))}


@router.patch("/contacts/{identifier}")
async def update_contact(
    identifier: str, body: ContactBody, emulator: EmulatorDep
) -> dict[str, Any]:
    """Change a contact's names, customer or metadata."""
    contact = _contact(emulator, identifier)
    changes = body.contact.model_dump(include=body.contact.model_fields_set)
    changes.pop("wa_id", None)
    for name, value in changes.items():
        setattr(contact, name, value if value is not None or name != "metadata" else {})
    contact.updated_at = emulator.clock.now()
    emulator.state.save()
    return {"data": contact_record(contact)}


@router.delete("/contacts/{identifier}", status_code=204)
async def delete_contact(identifier: str, emulator: EmulatorDep) -> Response:
    """Erase a contact (Kapso does it asynchronously; the answer is 204 either way)."""
    contact = _contact(emulator, identifier)
    del emulator.state.contacts[contact.id]
    for note_id in [n.id for n in emulator.state.notes.values() if n.contact_id == contact.id]:
        del emulator.state.notes[note_id]
    emulator.state.save()
    return Response(status_code=204)


# -- phone numbers ------------------------------------------------------------------------------


@router.get("/phone_numbers")
async def list_phone_numbers(request: Request, emulator: EmulatorDep) -> dict[str, Any]:
    """The project's numbers, with offset pagination (`page`, `per_page`, `meta`)."""
    query = request.query_params
    try:
        page, meta = offset_page(
            emulator.config.phone_numbers,
            page_raw=query.get("page"),
            per_page_raw=query.get("per_page"),
        )
    except PaginationError as err:
        raise PlatformError(400, str(err)) from err
    return {"data": [phone_number_record(p) for p in page], "meta": meta}


@router.get("/phone_numbers/{phone_number_id}")
async def get_phone_number(phone_number_id: str, emulator: EmulatorDep) -> dict[str, Any]:
    """One number by its Meta phone number id."""
    for phone in emulator.config.phone_numbers:
        if phone_number_id in (phone.phone_number_id, phone.whatsapp_config_id):
            return {"data": phone_number_record(phone)}
    raise PlatformError(404, "Phone number not found")
