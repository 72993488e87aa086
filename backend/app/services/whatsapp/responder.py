"""The assistant seam: what answers a WhatsApp user's message.

The seed's "integrate with the AI agent system" plugs in here: implement `Responder` and hand it
to the service. The default acknowledges in Spanish (Chile) and says when a file arrived.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from app.services.whatsapp.texts import WhatsAppTexts


class Attachment(BaseModel):
    """A file the user sent, as Kapso describes it."""

    model_config = ConfigDict(frozen=True)

    kind: str
    media_id: str | None = None
    url: str | None = None
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None


class ResponderRequest(BaseModel):
    """Everything an assistant needs to answer one inbound message.

    On a first attempt the message is not in the conversation's stored history yet: it is
    stored with the reply's record, in one transaction, once the answer is decided (or at once
    if `reply` fails). A retry stores it before asking again.
    """

    model_config = ConfigDict(frozen=True)

    user_id: UUID
    company_id: UUID
    conversation_id: UUID
    text: str
    attachments: tuple[Attachment, ...] = ()
    contact_name: str | None = None
    channel: str = "whatsapp"


class Responder(Protocol):
    """Returns the reply (Markdown allowed; it is converted to WhatsApp formatting)."""

    async def reply(self, request: ResponderRequest) -> str: ...


class AcknowledgementResponder:
    """Default responder: a short acknowledgement until the AI assistant is plugged in."""

    def __init__(self, texts: WhatsAppTexts | None = None) -> None:
        self._texts = texts or WhatsAppTexts()

    async def reply(self, request: ResponderRequest) -> str:
        greeting = self._texts.greet(request.contact_name)
        if request.attachments:
            files = ", ".join(self._describe(a) for a in request.attachments)
            return self._texts.file_received.format(greeting=greeting, files=files)
        return self._texts.acknowledgement.format(greeting=greeting)

    def _describe(self, attachment: Attachment) -> str:
        label = self._texts.file_kinds.get(attachment.kind, self._texts.file_default)
        return f"{label} «{attachment.filename}»" if attachment.filename else label
