"""The WhatsApp API (Meta proxy): `/meta/whatsapp/{graph_version}/...`, bare Graph shapes."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from kapso_emulator.deps import EmulatorDep, graph_page, parse_bool, parse_time, public_url
from kapso_emulator.emulator import Emulator
from kapso_emulator.errors import GraphError, invalid_parameter
from kapso_emulator.models import ConversationStatus, Template, TemplateStatus
from kapso_emulator.queries import (
    ConversationFilter,
    MessageFilter,
    find_conversations,
    find_messages,
)
from kapso_emulator.render import (
    conversation_record,
    media_download_url,
    message_record,
    template_record,
)
from kapso_emulator.state import new_numeric_id
from kapso_emulator.validation import (
    MEDIA_SEND_TYPES,
    SendRequest,
    check_envelope,
    check_interactive,
    check_media,
    check_reaction,
    check_template,
    check_text,
)

router = APIRouter(prefix="/meta/whatsapp/{graph_version}", tags=["Meta proxy"])
download_router = APIRouter(tags=["Meta proxy"])

_GRAPH_VERSION = re.compile(r"^v\d+\.\d+$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
TEMPLATE_CATEGORIES = frozenset({"AUTHENTICATION", "MARKETING", "UTILITY"})
MB = 1024 * 1024

# mime type → (WhatsApp media kind, size limit in bytes)
MEDIA_LIMITS: dict[str, tuple[str, int]] = {
    "image/jpeg": ("image", 5 * MB),
    "image/png": ("image", 5 * MB),
    "video/mp4": ("video", 16 * MB),
    "video/3gpp": ("video", 16 * MB),
    "audio/aac": ("audio", 16 * MB),
    "audio/amr": ("audio", 16 * MB),
    "audio/mpeg": ("audio", 16 * MB),
    "audio/mp4": ("audio", 16 * MB),
    "audio/ogg": ("audio", 16 * MB),
    "image/webp": ("sticker", 500 * 1024),
}
DOCUMENT_LIMIT = 100 * MB


def _check_version(graph_version: str) -> None:
    if not _GRAPH_VERSION.match(graph_version):
        raise GraphError(
            f"Unknown path components: /{graph_version}",
            code=2500,
            error_subcode=None,
        )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as err:
        raise invalid_parameter("The request body is not valid JSON.") from err
    if not isinstance(body, dict):
        raise invalid_parameter("The request body must be a JSON object.")
    return body


# -- sending ------------------------------------------------------------------------------------


@router.post("/{phone_number_id}/messages")
async def send_message(
    graph_version: str, phone_number_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Send a message of any supported type, or mark an inbound message as read."""
    _check_version(graph_version)
    raw = await _json_body(request)
    try:
        req = SendRequest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise invalid_parameter(f"Param {where}: {first['msg']}") from err
    phone = emulator.phone(phone_number_id)
    if req.status is not None:
        return _mark_read(emulator, phone_number_id, req, raw)

    wa_id = check_envelope(req)
    msg_type = req.type or "text"
    obj = req.type_object()
    if obj is None:
        raise invalid_parameter(f"Param {msg_type} is required for type {msg_type}.")
    media_id: str | None = None
    if msg_type == "text":
        content = check_text(obj)
    elif msg_type in MEDIA_SEND_TYPES:
        content = check_media(msg_type, obj, set(emulator.state.media))
        media_id = str(obj["id"]) if obj.get("id") else None
    elif msg_type == "reaction":
        content = check_reaction(obj)
    elif msg_type == "interactive":
        content = check_interactive(obj)
    else:
        language = obj.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        template = emulator.state.find_template(
            phone.business_account_id, str(obj.get("name", "")), code
        )
        content = check_template(obj, template)

    fail_with: int | None = None
    if msg_type != "template" and not emulator.check_window(phone_number_id, wa_id):
        if emulator.config.window_mode.value == "reject":
            raise GraphError(
                "(#131047) Re-engagement message",
                code=131047,
                error_subcode=None,
                details="Message failed to send because more than 24 hours have passed since "
                "the customer last replied to this number.",
            )
        fail_with = 131047

    message = emulator.record_send(
        phone_number_id=phone_number_id,
        wa_id=wa_id,
        msg_type=msg_type,
        body=obj,
        content=content,
        request=raw,
        biz_opaque=req.biz_opaque_callback_data,
        context_id=(req.context or {}).get("message_id"),
        media_id=media_id,
        fail_with=fail_with,
        public_url=public_url(request, emulator),
    )
    sent: dict[str, Any] = {"id": message.id}
    if msg_type == "template":
        sent["message_status"] = "accepted"
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": req.to or req.recipient, "wa_id": wa_id}],
        "messages": [sent],
    }


def _mark_read(
    emulator: Emulator, phone_number_id: str, req: SendRequest, raw: dict[str, Any]
) -> dict[str, Any]:
    if req.messaging_product != "whatsapp":
        raise invalid_parameter("The parameter messaging_product is required and must be whatsapp.")
    if req.status != "read":
        raise invalid_parameter(f"Param status: '{req.status}' is not supported; use read.")
    if not req.message_id:
        raise invalid_parameter("The parameter message_id is required.")
    message = emulator.state.messages.get(req.message_id)
    if message is None or message.phone_number_id != phone_number_id:
        raise invalid_parameter(f"Param message_id: '{req.message_id}' is not a valid message id.")
    emulator.record_read_receipt(phone_number_id, message, raw)
    return {"success": True}


# -- message history ----------------------------------------------------------------------------


@router.get("/{phone_number_id}/messages")
async def list_messages(
    graph_version: str, phone_number_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Message history of a number, newest first, with cursor pagination."""
    _check_version(graph_version)
    emulator.phone(phone_number_id)
    query = request.query_params
    criteria = MessageFilter(
        phone_number_id=phone_number_id,
        conversation_id=query.get("conversation_id"),
        direction=query.get("direction"),
        status=query.get("status"),
        since=parse_time(query.get("since"), "since", graph=True),
        until=parse_time(query.get("until"), "until", graph=True),
    )
    page, paging = graph_page(request, find_messages(emulator.state, criteria))
    base = public_url(request, emulator)
    fields = query.get("fields")
    return {
        "data": [message_record(emulator.state, m, base, fields=fields) for m in page],
        "paging": paging,
    }


@router.get("/{phone_number_id}/messages/{message_id}")
async def get_message(
    graph_version: str,
    phone_number_id: str,
    message_id: str,
    request: Request,
    emulator: EmulatorDep,
) -> dict[str, Any]:
    """One message by its wamid."""
    _check_version(graph_version)
    message = emulator.state.messages.get(message_id)
    if message is None or message.phone_number_id != phone_number_id:
        raise _no_object(message_id)
    base = public_url(request, emulator)
    return message_record(emulator.state, message, base, fields=request.query_params.get("fields"))


# -- conversations ------------------------------------------------------------------------------


@router.get("/{phone_number_id}/conversations")
async def list_conversations(
    graph_version: str, phone_number_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Conversations of a number, most recently active first."""
    _check_version(graph_version)
    emulator.phone(phone_number_id)
    query = request.query_params
    unassigned = parse_bool(query.get("unassigned"))
    criteria = ConversationFilter(
        phone_number_id=phone_number_id,
        status=query.get("status"),
        phone_number=query.get("phone_number"),
        last_active_since=parse_time(query.get("last_active_since"), "since", graph=True),
        last_active_until=parse_time(query.get("last_active_until"), "until", graph=True),
        assigned_user_id=query.get("assigned_user_id") or (None if unassigned is not False else ""),
    )
    page, paging = graph_page(request, find_conversations(emulator.state, criteria))
    return {"data": [conversation_record(emulator.state, c) for c in page], "paging": paging}


@router.get("/{phone_number_id}/conversations/{conversation_id}")
async def get_number_conversation(
    graph_version: str, phone_number_id: str, conversation_id: str, emulator: EmulatorDep
) -> dict[str, Any]:
    """One conversation of a number."""
    _check_version(graph_version)
    conv = emulator.state.conversations.get(conversation_id)
    if conv is None or conv.phone_number_id != phone_number_id:
        raise _no_object(conversation_id)
    return conversation_record(emulator.state, conv)


@router.get("/conversations/{conversation_id}")
async def get_conversation(
    graph_version: str, conversation_id: str, emulator: EmulatorDep
) -> dict[str, Any]:
    """One conversation by id."""
    _check_version(graph_version)
    conv = emulator.state.conversations.get(conversation_id)
    if conv is None:
        raise _no_object(conversation_id)
    return conversation_record(emulator.state, conv)


class ConversationStatusBody(BaseModel):
    """The TS SDK's bare `{status}` body."""

    model_config = ConfigDict(extra="forbid")

    status: ConversationStatus


@router.patch("/conversations/{conversation_id}")
async def patch_conversation(
    graph_version: str,
    conversation_id: str,
    body: ConversationStatusBody,
    emulator: EmulatorDep,
) -> dict[str, Any]:
    """End or reopen a conversation (the SDK's request shape)."""
    _check_version(graph_version)
    conv = emulator.state.conversations.get(conversation_id)
    if conv is None:
        raise _no_object(conversation_id)
    if body.status is ConversationStatus.ENDED:
        emulator.end_conversation(conv)
    else:
        emulator.reopen_conversation(conv)
    return conversation_record(emulator.state, conv)


# -- media --------------------------------------------------------------------------------------


@router.post("/{phone_number_id}/media")
async def upload_media(
    graph_version: str, phone_number_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, str]:
    """Upload a file (multipart `file`, `messaging_product`, `type`); returns its media id."""
    _check_version(graph_version)
    emulator.phone(phone_number_id)
    # The context manager closes the spooled upload file (an unclosed one warns).
    async with request.form() as form:
        if form.get("messaging_product") != "whatsapp":
            raise invalid_parameter(
                "The parameter messaging_product is required and must be whatsapp."
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid_parameter("The parameter file is required.")
        declared = form.get("type")
        mime = (declared if isinstance(declared, str) and declared else None) or (
            upload.content_type or "application/octet-stream"
        )
        mime = mime.split(";")[0].strip().lower()
        data = await upload.read()
        filename = upload.filename
    _kind, limit = MEDIA_LIMITS.get(mime, ("document", DOCUMENT_LIMIT))
    if not (mime in MEDIA_LIMITS or mime.startswith(("application/", "text/"))):
        raise invalid_parameter(f"Param file must be a file with a supported type, not {mime}.")
    if len(data) > limit:
        raise invalid_parameter(f"Param file is too large: {len(data)} bytes (max {limit}).")
    if not data:
        raise invalid_parameter("Param file is empty.")
    media = emulator.store_media(phone_number_id, data, mime, filename)
    return {"id": media.id}


def _no_object(object_id: str) -> GraphError:
    return GraphError(
        f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation.",
        code=100,
        error_subcode=33,
        error_type="GraphMethodException",
    )


@router.get("/{object_id}")
async def get_object(
    graph_version: str, object_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """A media object (with its download URLs), a template, or a phone number, by id."""
    _check_version(graph_version)
    media = emulator.state.media.get(object_id)
    if media is not None:
        url = media_download_url(public_url(request, emulator), media)
        expires = emulator.clock.now() + timedelta(minutes=4)
        return {
            "messaging_product": "whatsapp",
            "id": media.id,
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": media.file_size,
            "url": url,
            "download_url": url,
            "download_url_expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    template = emulator.state.templates.get(object_id)
    if template is not None:
        return template_record(template)
    for phone in emulator.config.phone_numbers:
        if phone.phone_number_id == object_id:
            return {
                "id": phone.phone_number_id,
                "display_phone_number": phone.display_phone_number,
                "verified_name": phone.verified_name,
                "quality_rating": phone.quality_rating,
            }
    raise _no_object(object_id)


@router.delete("/{object_id}")
async def delete_object(
    graph_version: str, object_id: str, emulator: EmulatorDep
) -> dict[str, bool]:
    """Delete an uploaded media object."""
    _check_version(graph_version)
    if emulator.state.media.pop(object_id, None) is None:
        raise _no_object(object_id)
    emulator.state.save()
    return {"success": True}


@download_router.get("/meta/whatsapp/media_download")
async def download_media(token: str, emulator: EmulatorDep) -> Response:
    """Kapso's `download_url`: no API key, the token is the credential."""
    media = emulator.state.find_media_by_token(token)
    if media is None:
        return Response(b'{"error":"Media not found"}', 404, media_type="application/json")
    headers = {}
    if media.filename:
        headers["Content-Disposition"] = f'attachment; filename="{media.filename}"'
    return Response(base64.b64decode(media.data_b64), media_type=media.mime_type, headers=headers)


# -- templates ----------------------------------------------------------------------------------


def _waba(emulator: Emulator, waba_id: str) -> None:
    if waba_id not in emulator.waba_ids():
        raise _no_object(waba_id)


@router.get("/{waba_id}/message_templates")
async def list_templates(
    graph_version: str, waba_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Templates of a WhatsApp Business Account, filtered by name, status, category, language."""
    _check_version(graph_version)
    _waba(emulator, waba_id)
    query = request.query_params
    name, status = query.get("name"), query.get("status")
    category, language = query.get("category"), query.get("language")
    found = [
        t
        for t in sorted(emulator.state.templates.values(), key=lambda t: t.seq)
        if t.business_account_id == waba_id
        and (not name or name in t.name)
        and (not status or t.status.value == status.upper())
        and (not category or t.category == category.upper())
        and (not language or t.language == language)
    ]
    page, paging = graph_page(request, found)
    return {"data": [template_record(t) for t in page], "paging": paging}


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    language: str
    category: str
    parameter_format: str = "POSITIONAL"
    components: list[dict[str, Any]] = Field(default_factory=list)


def _check_template_components(components: list[dict[str, Any]]) -> None:
    limits = {"HEADER": 60, "BODY": 1024, "FOOTER": 60}
    has_body = False
    for component in components:
        kind = str(component.get("type", "")).upper()
        text = component.get("text")
        has_body = has_body or kind == "BODY"
        if kind in limits and isinstance(text, str) and len(text) > limits[kind]:
            raise invalid_parameter(f"{kind} text must be at most {limits[kind]} characters long.")
        if kind == "BUTTONS":
            for button in component.get("buttons") or []:
                if isinstance(button, dict) and len(str(button.get("text", ""))) > 25:
                    raise invalid_parameter("Button text must be at most 25 characters long.")
    if not has_body:
        raise invalid_parameter("A template needs a BODY component.")


@router.post("/{waba_id}/message_templates")
async def create_template(
    graph_version: str, waba_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """Create a template; approved at once or left PENDING, as configured."""
    _check_version(graph_version)
    _waba(emulator, waba_id)
    try:
        body = TemplateCreate.model_validate(await _json_body(request))
    except ValidationError as err:
        first = err.errors()[0]
        raise invalid_parameter(f"Param {first['loc'][0]}: {first['msg']}") from err
    if not _TEMPLATE_NAME.match(body.name):
        raise invalid_parameter("Param name may only contain a-z, 0-9 and _ (max 512).")
    category = body.category.upper()
    if category not in TEMPLATE_CATEGORIES:
        raise invalid_parameter(f"Param category must be one of {sorted(TEMPLATE_CATEGORIES)}.")
    if body.parameter_format.upper() not in ("NAMED", "POSITIONAL"):
        raise invalid_parameter("Param parameter_format must be NAMED or POSITIONAL.")
    _check_template_components(body.components)
    if emulator.state.find_template(waba_id, body.name, body.language) is not None:
        raise GraphError(
            "Message template already exists",
            code=100,
            error_subcode=2388024,
            details=f"Content in this language already exists: {body.name} ({body.language})",
        )
    approved = emulator.config.template_approval.value == "auto"
    template = Template(
        seq=emulator.state.next_seq(),
        id=new_numeric_id(),
        business_account_id=waba_id,
        name=body.name,
        language=body.language,
        category=category,
        status=TemplateStatus.APPROVED if approved else TemplateStatus.PENDING,
        parameter_format=body.parameter_format.upper(),
        components=body.components,
        created_at=emulator.clock.now(),
    )
    emulator.state.templates[template.id] = template
    emulator.state.save()
    return {"id": template.id, "status": template.status.value, "category": template.category}


@router.delete("/{waba_id}/message_templates")
async def delete_template(
    graph_version: str, waba_id: str, request: Request, emulator: EmulatorDep
) -> dict[str, bool]:
    """Delete a template by `name` (every language), or one by `hsm_id`."""
    _check_version(graph_version)
    _waba(emulator, waba_id)
    name = request.query_params.get("name")
    hsm_id = request.query_params.get("hsm_id")
    if not name and not hsm_id:
        raise invalid_parameter("The parameter name is required.")
    doomed = [
        t.id
        for t in emulator.state.templates.values()
        if t.business_account_id == waba_id
        and (not name or t.name == name)
        and (not hsm_id or t.id == hsm_id)
    ]
    if not doomed:
        raise GraphError(
            "Message template not found", code=100, details=f"No template named {name or hsm_id}"
        )
    for template_id in doomed:
        del emulator.state.templates[template_id]
    emulator.state.save()
    return {"success": True}
