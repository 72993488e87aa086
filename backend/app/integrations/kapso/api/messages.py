"""Messages (Meta proxy): every kind of send, mark-as-read, and message history."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from app.integrations.kapso import limits
from app.integrations.kapso.api.base import BaseAPI, KapsoHTTP, parse_model
from app.integrations.kapso.api.pagination import MAX_PAGE_SIZE, iso, iterate_pages
from app.integrations.kapso.api.recipients import Recipient, RecipientResolver
from app.integrations.kapso.exceptions import (
    KapsoConfigurationError,
    KapsoRequestValidationError,
)
from app.integrations.kapso.models import (
    MEDIA_TYPES,
    ButtonsMessage,
    CtaUrlMessage,
    CursorPage,
    InteractiveMessage,
    ListMessage,
    MarkReadResponse,
    MessageRecord,
    MessageType,
    SendResponse,
    SendResult,
    TemplateButtonParameter,
    TemplateMedia,
)

TemplateParameters = Sequence[str] | Mapping[str, str]
Direction = Literal["inbound", "outbound"]
JSONObject = dict[str, Any]


class MessagesAPI(BaseAPI):
    """Sends through Kapso's Meta proxy; every send returns the message's wamid.

    Each send takes either `conversation_id` (a Kapso conversation, resolved to its business
    number and phone) or `to` (+ optional `phone_number_id`, else the client's default), and
    may carry `callback_data`, our own reference echoed back in status webhooks.
    """

    def __init__(self, http: KapsoHTTP, recipients: RecipientResolver) -> None:
        super().__init__(http)
        self._recipients = recipients

    # Sends ------------------------------------------------------------------------------
    async def send_text(
        self,
        *,
        message: str,
        conversation_id: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
        preview_url: bool = False,
        reply_to: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send a text message (≤4096 characters)."""
        limits.validate_text(message)
        text: JSONObject = {"body": message}
        if preview_url:
            text["preview_url"] = True
        return await self._send(
            {"type": "text", "text": text},
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            reply_to=reply_to,
            callback_data=callback_data,
        )

    async def send_media(
        self,
        *,
        media_type: MessageType | str,
        media_url: str | None = None,
        media_id: str | None = None,
        caption: str | None = None,
        filename: str | None = None,
        conversation_id: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
        reply_to: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send an image, video, audio, document or sticker, by public link or uploaded id."""
        kind = _media_type(media_type)
        if (media_url is None) == (media_id is None):
            raise KapsoRequestValidationError(
                "media", "give exactly one of media_url (a link) or media_id (an upload)"
            )
        media: JSONObject = {}
        if media_url is not None:
            if not media_url.startswith(("https://", "http://")):
                raise KapsoRequestValidationError("media_url", "must be an http(s) URL")
            media["link"] = media_url
        else:
            media["id"] = media_id
        if caption is not None:
            if kind in {MessageType.AUDIO, MessageType.STICKER}:
                raise KapsoRequestValidationError("caption", f"{kind} messages take no caption")
            limits.validate_caption(caption, f"{kind}.caption")
            media["caption"] = caption
        if filename is not None:
            if kind is not MessageType.DOCUMENT:
                raise KapsoRequestValidationError("filename", "only documents take a filename")
            limits.check_length("document.filename", filename, limits.FILENAME_MAX)
            media["filename"] = filename
        return await self._send(
            {"type": kind.value, kind.value: media},
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            reply_to=reply_to,
            callback_data=callback_data,
        )

    async def send_interactive(
        self,
        *,
        interactive: InteractiveMessage,
        conversation_id: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
        reply_to: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send reply buttons, a list, or a call-to-action URL button."""
        limits.validate_interactive(interactive)
        return await self._send(
            {"type": "interactive", "interactive": _interactive_body(interactive)},
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            reply_to=reply_to,
            callback_data=callback_data,
        )

    async def send_template(
        self,
        *,
        template_name: str,
        language_code: str,
        body_parameters: TemplateParameters | None = None,
        header_parameters: TemplateParameters | None = None,
        header_media: TemplateMedia | None = None,
        button_parameters: Sequence[TemplateButtonParameter] = (),
        conversation_id: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
        callback_data: str | None = None,
    ) -> SendResult:
        """Send an approved template; parameters are positional (a list) or named (a dict)."""
        limits.validate_template_name(template_name)
        limits.validate_language_code(language_code)
        if header_parameters is not None and header_media is not None:
            raise KapsoRequestValidationError(
                "template.header", "give header text parameters or a header media, not both"
            )
        components = template_components(
            header_parameters=header_parameters,
            header_media=header_media,
            body_parameters=body_parameters,
            button_parameters=button_parameters,
        )
        template: JSONObject = {"name": template_name, "language": {"code": language_code}}
        if components:
            template["components"] = components
        return await self._send(
            {"type": "template", "template": template},
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            reply_to=None,
            callback_data=callback_data,
        )

    async def send_reaction(
        self,
        *,
        message_id: str,
        emoji: str,
        conversation_id: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
    ) -> SendResult:
        """React to a message with an emoji (an empty emoji removes the reaction)."""
        if not message_id:
            raise KapsoRequestValidationError("reaction.message_id", "must not be empty")
        return await self._send(
            {"type": "reaction", "reaction": {"message_id": message_id, "emoji": emoji}},
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            reply_to=None,
            callback_data=None,
        )

    async def mark_as_read(
        self,
        *,
        message_id: str,
        phone_number_id: str | None = None,
        conversation_id: str | None = None,
        typing_indicator: bool = False,
    ) -> bool:
        """Mark an inbound message read; optionally show "typing…" until our reply (~25 s)."""
        sender = await self._sender(phone_number_id, conversation_id)
        body: JSONObject = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing_indicator:
            body["typing_indicator"] = {"type": "text"}
        # Marking read twice is harmless, so it is retried like a read.
        data = await self._http.request_json(
            "POST", self._http.proxy_url(f"{sender}/messages"), json=body
        )
        return data is None or parse_model(MarkReadResponse, data).success

    # History ----------------------------------------------------------------------------
    async def list(
        self,
        *,
        phone_number_id: str | None = None,
        conversation_id: str | None = None,
        direction: Direction | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> CursorPage[MessageRecord]:
        """One page of a business number's message history, with Kapso's extension."""
        sender = self._default_sender(phone_number_id)
        data = await self._http.request_json(
            "GET",
            self._http.proxy_url(f"{sender}/messages"),
            params={
                "conversation_id": conversation_id,
                "direction": direction,
                "status": status,
                "since": iso(since),
                "until": iso(until),
                "limit": limit,
                "after": after,
                "before": before,
                "fields": "kapso(default)",
            },
        )
        return parse_model(CursorPage[MessageRecord], data)

    async def iterate(
        self,
        *,
        phone_number_id: str | None = None,
        conversation_id: str | None = None,
        direction: Direction | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[MessageRecord]:
        """Every message matching the filters, across all pages."""

        async def fetch(after: str | None) -> CursorPage[MessageRecord]:
            return await self.list(
                phone_number_id=phone_number_id,
                conversation_id=conversation_id,
                direction=direction,
                since=since,
                until=until,
                limit=MAX_PAGE_SIZE,
                after=after,
            )

        async for record in iterate_pages(fetch):
            yield record

    async def get(self, wamid: str, *, phone_number_id: str | None = None) -> MessageRecord:
        """One message of the history by its wamid."""
        sender = self._default_sender(phone_number_id)
        data = await self._http.request_json(
            "GET",
            self._http.proxy_url(f"{sender}/messages/{wamid}"),
            params={"fields": "kapso(default)"},
        )
        return parse_model(MessageRecord, data)

    # Internals --------------------------------------------------------------------------
    async def _send(
        self,
        content: JSONObject,
        *,
        conversation_id: str | None,
        phone_number_id: str | None,
        to: str | None,
        reply_to: str | None,
        callback_data: str | None,
    ) -> SendResult:
        limits.validate_callback_data(callback_data)
        recipient: Recipient = await self._recipients.resolve(
            conversation_id=conversation_id, phone_number_id=phone_number_id, to=to
        )
        body: JSONObject = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": recipient.to,
            **content,
        }
        if reply_to:
            body["context"] = {"message_id": reply_to}
        if callback_data is not None:
            body["biz_opaque_callback_data"] = callback_data
        data = await self._http.request_json(
            "POST",
            self._http.proxy_url(f"{recipient.phone_number_id}/messages"),
            json=body,
            is_send=True,
        )
        response = parse_model(SendResponse, data)
        contact = response.contacts[0] if response.contacts else None
        return SendResult(
            wamid=response.messages[0].id,
            message_status=response.messages[0].message_status,
            phone_number_id=recipient.phone_number_id,
            to=recipient.to,
            wa_id=contact.wa_id if contact else None,
            conversation_id=recipient.conversation_id,
            callback_data=callback_data,
        )

    async def _sender(self, phone_number_id: str | None, conversation_id: str | None) -> str:
        if phone_number_id is None and conversation_id is not None:
            recipient = await self._recipients.resolve(
                conversation_id=conversation_id, phone_number_id=None, to=None
            )
            return recipient.phone_number_id
        return self._default_sender(phone_number_id)

    def _default_sender(self, phone_number_id: str | None) -> str:
        sender = phone_number_id or self._recipients.default_phone_number_id
        if not sender:
            raise KapsoConfigurationError(
                "phone_number_id is required (no default business number configured)"
            )
        return sender


def _media_type(value: MessageType | str) -> MessageType:
    try:
        kind = MessageType(value)
    except ValueError:
        kind = None
    if kind not in MEDIA_TYPES or kind is None:
        allowed = ", ".join(sorted(t.value for t in MEDIA_TYPES))
        raise KapsoRequestValidationError("media_type", f"must be one of {allowed}")
    return kind


def _frame(header: str | None, body: str, footer: str | None) -> JSONObject:
    frame: JSONObject = {"body": {"text": body}}
    if header is not None:
        frame["header"] = {"type": "text", "text": header}
    if footer is not None:
        frame["footer"] = {"text": footer}
    return frame


def _interactive_body(message: InteractiveMessage) -> JSONObject:
    body = _frame(message.header, message.body, message.footer)
    if isinstance(message, ButtonsMessage):
        body["type"] = "button"
        body["action"] = {
            "buttons": [
                {"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in message.buttons
            ]
        }
    elif isinstance(message, ListMessage):
        body["type"] = "list"
        sections: builtins.list[JSONObject] = []
        for section in message.sections:
            rows = [row.model_dump(exclude_none=True) for row in section.rows]
            entry: JSONObject = {"rows": rows}
            if section.title is not None:
                entry["title"] = section.title
            sections.append(entry)
        body["action"] = {"button": message.button_text, "sections": sections}
    elif isinstance(message, CtaUrlMessage):
        body["type"] = "cta_url"
        body["action"] = {
            "name": "cta_url",
            "parameters": {"display_text": message.display_text, "url": message.url},
        }
    return body


def _text_parameters(field: str, values: TemplateParameters) -> builtins.list[JSONObject]:
    items = values.items() if isinstance(values, Mapping) else ((None, v) for v in values)
    parameters: builtins.list[JSONObject] = []
    for i, (name, value) in enumerate(items):
        label = f"{field}[{name if name is not None else i}]"
        limits.check_length(label, value, limits.TEXT_BODY_MAX)
        parameter: JSONObject = {"type": "text", "text": value}
        if name is not None:
            parameter["parameter_name"] = name
        parameters.append(parameter)
    return parameters


def template_components(
    *,
    header_parameters: TemplateParameters | None,
    header_media: TemplateMedia | None,
    body_parameters: TemplateParameters | None,
    button_parameters: Sequence[TemplateButtonParameter],
) -> builtins.list[JSONObject]:
    """Meta's `components` array from positional or named parameters."""
    components: builtins.list[JSONObject] = []
    if header_media is not None:
        if (header_media.link is None) == (header_media.id is None):
            raise KapsoRequestValidationError(
                "template.header", "a header media needs exactly one of link or id"
            )
        media = header_media.model_dump(exclude_none=True, exclude={"type"})
        components.append(
            {
                "type": "header",
                "parameters": [{"type": header_media.type, header_media.type: media}],
            }
        )
    elif header_parameters:
        components.append(
            {
                "type": "header",
                "parameters": _text_parameters("template.header.parameters", header_parameters),
            }
        )
    if body_parameters:
        components.append(
            {
                "type": "body",
                "parameters": _text_parameters("template.body.parameters", body_parameters),
            }
        )
    for button in button_parameters:
        limits.check_length(f"template.buttons[{button.index}]", button.value, 2000)
        parameter: JSONObject
        if button.sub_type == "quick_reply":
            parameter = {"type": "payload", "payload": button.value}
        elif button.sub_type == "copy_code":
            parameter = {"type": "coupon_code", "coupon_code": button.value}
        else:
            parameter = {"type": "text", "text": button.value}
        components.append(
            {
                "type": "button",
                "sub_type": button.sub_type,
                "index": str(button.index),
                "parameters": [parameter],
            }
        )
    return components
