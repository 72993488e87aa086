"""The legacy API (`/api/v1`): only contact notes, which nothing newer offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from kapso_emulator.deps import EmulatorDep
from kapso_emulator.errors import PlatformError
from kapso_emulator.models import Contact, Note
from kapso_emulator.render import note_record
from kapso_emulator.state import new_uuid

router = APIRouter(prefix="/api/v1", tags=["Legacy API"])


class NoteFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    content: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: NoteFields


def _contact(state_contact: Contact | None) -> Contact:
    if state_contact is None:
        raise PlatformError(404, "Contact not found")
    return state_contact


@router.get("/whatsapp_contacts/{identifier}/notes")
async def list_notes(identifier: str, emulator: EmulatorDep) -> dict[str, Any]:
    """A contact's notes, newest first."""
    contact = _contact(emulator.state.find_contact(identifier))
    notes = sorted(
        (n for n in emulator.state.notes.values() if n.contact_id == contact.id),
        key=lambda n: n.seq,
        reverse=True,
    )
    return {"data": [note_record(n) for n in notes]}


@router.post("/whatsapp_contacts/{identifier}/notes", status_code=201)
async def create_note(identifier: str, body: NoteBody, emulator: EmulatorDep) -> dict[str, Any]:
    """Add a note to a contact."""
    contact = _contact(emulator.state.find_contact(identifier))
    now = emulator.clock.now()
    note = Note(
        seq=emulator.state.next_seq(),
        id=new_uuid(),
        contact_id=contact.id,
        name=body.note.name,
        content=body.note.content,
        metadata=body.note.metadata or {},
        created_at=now,
        updated_at=now,
    )
    emulator.state.notes[note.id] = note
    emulator.state.save()
    return {"data": note_record(note)}
