"""WhatsApp's limits on outgoing messages, checked the way Meta checks them (Graph error 100)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from kapso_emulator.errors import GraphError, invalid_parameter
from kapso_emulator.models import Template, TemplateStatus

MEDIA_SEND_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})
SEND_TYPES = MEDIA_SEND_TYPES | {"text", "reaction", "interactive", "template"}
CAPTIONED = frozenset({"image", "video", "document"})

TEXT_MAX = 4096
CAPTION_MAX = 1024
BODY_MAX = 1024
HEADER_MAX = 60
FOOTER_MAX = 60
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
LIST_BUTTON_MAX = 20
SECTION_TITLE_MAX = 24
ROW_ID_MAX = 200
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
LIST_ROWS_MAX = 10
LIST_SECTIONS_MAX = 10
CTA_TEXT_MAX = 20
BIZ_OPAQUE_MAX = 512

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class SendRequest(BaseModel):
    """The body of `POST /{phone_number_id}/messages`: a send or a mark-as-read."""

    # Meta ignores fields it does not know; so do we, to accept every client's spelling.
    model_config = ConfigDict(extra="allow")

    messaging_product: str | None = None
    recipient_type: str | None = None
    to: str | None = None
    recipient: str | None = None
    type: str | None = None
    context: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = None
    status: str | None = None
    message_id: str | None = None
    typing_indicator: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    sticker: dict[str, Any] | None = None
    reaction: dict[str, Any] | None = None
    interactive: dict[str, Any] | None = None
    template: dict[str, Any] | None = None

    def type_object(self) -> dict[str, Any] | None:
        value = getattr(self, self.type or "text", None)
        return value if isinstance(value, dict) else None


def _text(obj: dict[str, Any], key: str, where: str, limit: int, *, required: bool) -> str:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise invalid_parameter(f"Param {where}['{key}'] is required.")
        return ""
    if not isinstance(value, str):
        raise invalid_parameter(f"Param {where}['{key}'] must be a string.")
    if len(value) > limit:
        raise invalid_parameter(f"Param {where}['{key}'] must be at most {limit} characters long.")
    return value


def _dict(obj: dict[str, Any], key: str, where: str, *, required: bool) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid_parameter(f"Param {where}['{key}'] is required.")
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter(f"Param {where}['{key}'] must be an object.")
    return value


def check_envelope(req: SendRequest) -> str:
    """Common checks of a send; returns the recipient's wa_id (digits)."""
    if req.messaging_product != "whatsapp":
        raise invalid_parameter("The parameter messaging_product is required and must be whatsapp.")
    recipient = req.to or req.recipient
    if not recipient:
        raise invalid_parameter("The parameter to is required.")
    wa_id = "".join(ch for ch in recipient if ch.isdigit())
    if not wa_id and req.to:
        raise invalid_parameter(f"Param to: '{req.to}' is not a valid phone number.")
    msg_type = req.type or "text"
    if msg_type not in SEND_TYPES:
        raise invalid_parameter(f"Param type: '{msg_type}' is not a supported message type.")
    if req.biz_opaque_callback_data is not None and (
        len(req.biz_opaque_callback_data) > BIZ_OPAQUE_MAX
    ):
        raise invalid_parameter(
            f"Param biz_opaque_callback_data must be at most {BIZ_OPAQUE_MAX} characters long."
        )
    return wa_id or (req.recipient or "")


def check_text(obj: dict[str, Any]) -> str:
    return _text(obj, "body", "text", TEXT_MAX, required=True)


def check_media(msg_type: str, obj: dict[str, Any], known_media: set[str]) -> str:
    """Returns the caption; an unknown media id is Meta's error 100."""
    media_id, link = obj.get("id"), obj.get("link")
    if not media_id and not link:
        raise invalid_parameter(f"Param {msg_type} must contain either id or link.")
    if media_id and link:
        raise invalid_parameter(f"Param {msg_type} must contain only one of id and link.")
    if media_id and str(media_id) not in known_media:
        raise GraphError(
            "(#100) Invalid parameter",
            code=100,
            details=f"Param {msg_type}['id'] is not a valid media id: {media_id}",
        )
    if msg_type in CAPTIONED:
        return _text(obj, "caption", msg_type, CAPTION_MAX, required=False)
    if "caption" in obj:
        raise invalid_parameter(f"Param {msg_type}['caption'] is not supported for {msg_type}.")
    return ""


def check_reaction(obj: dict[str, Any]) -> str:
    if not obj.get("message_id"):
        raise invalid_parameter("Param reaction['message_id'] is required.")
    emoji = obj.get("emoji", "")
    if not isinstance(emoji, str):
        raise invalid_parameter("Param reaction['emoji'] must be a string.")
    return emoji


def _check_header_footer(obj: dict[str, Any], *, text_only_header: bool) -> None:
    header = _dict(obj, "header", "interactive", required=False)
    if header:
        header_type = header.get("type", "text")
        if header_type == "text":
            _text(header, "text", "interactive['header']", HEADER_MAX, required=True)
        elif text_only_header or header_type not in ("image", "video", "document"):
            raise invalid_parameter(f"Param interactive['header']['type'] '{header_type}' invalid.")
    footer = _dict(obj, "footer", "interactive", required=False)
    if footer:
        _text(footer, "text", "interactive['footer']", FOOTER_MAX, required=True)


def _check_buttons(action: dict[str, Any]) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise invalid_parameter("Param interactive['action']['buttons'] must have 1 to 3 buttons.")
    seen: set[str] = set()
    for index, button in enumerate(buttons):
        where = f"interactive['action']['buttons'][{index}]"
        if not isinstance(button, dict) or button.get("type", "reply") != "reply":
            raise invalid_parameter(f"Param {where}['type'] must be reply.")
        reply = _dict(button, "reply", where, required=True)
        button_id = _text(reply, "id", where + "['reply']", BUTTON_ID_MAX, required=True)
        _text(reply, "title", where + "['reply']", BUTTON_TITLE_MAX, required=True)
        if button_id in seen:
            raise invalid_parameter("Buttons must have unique ids.")
        seen.add(button_id)


def _check_list(action: dict[str, Any]) -> None:
    _text(action, "button", "interactive['action']", LIST_BUTTON_MAX, required=True)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= LIST_SECTIONS_MAX:
        raise invalid_parameter(
            f"Param interactive['action']['sections'] must have 1 to {LIST_SECTIONS_MAX} sections."
        )
    total_rows = 0
    for s_index, section in enumerate(sections):
        where = f"interactive['action']['sections'][{s_index}]"
        if not isinstance(section, dict):
            raise invalid_parameter(f"Param {where} must be an object.")
        _text(section, "title", where, SECTION_TITLE_MAX, required=len(sections) > 1)
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise invalid_parameter(f"Param {where}['rows'] must have at least one row.")
        for r_index, row in enumerate(rows):
            row_where = f"{where}['rows'][{r_index}]"
            if not isinstance(row, dict):
                raise invalid_parameter(f"Param {row_where} must be an object.")
            _text(row, "id", row_where, ROW_ID_MAX, required=True)
            _text(row, "title", row_where, ROW_TITLE_MAX, required=True)
            _text(row, "description", row_where, ROW_DESCRIPTION_MAX, required=False)
        total_rows += len(rows)
    if total_rows > LIST_ROWS_MAX:
        raise invalid_parameter(f"Total row count exceed max allowed count: {LIST_ROWS_MAX}")


def check_interactive(obj: dict[str, Any]) -> str:
    """Returns the body text."""
    kind = obj.get("type")
    if kind not in ("button", "list", "cta_url"):
        raise invalid_parameter(f"Param interactive['type'] '{kind}' is not supported.")
    body = _dict(obj, "body", "interactive", required=True)
    text = _text(body, "text", "interactive['body']", BODY_MAX, required=True)
    _check_header_footer(obj, text_only_header=kind == "list")
    action = _dict(obj, "action", "interactive", required=True)
    if kind == "button":
        _check_buttons(action)
    elif kind == "list":
        _check_list(action)
    else:
        if action.get("name") != "cta_url":
            raise invalid_parameter("Param interactive['action']['name'] must be cta_url.")
        params = _dict(action, "parameters", "interactive['action']", required=True)
        where = "interactive['action']['parameters']"
        _text(params, "display_text", where, CTA_TEXT_MAX, required=True)
        _text(params, "url", where, 2000, required=True)
    return text


def _component_params(components: list[Any], kind: str) -> list[dict[str, Any]]:
    for component in components:
        if isinstance(component, dict) and str(component.get("type", "")).lower() == kind:
            params = component.get("parameters") or []
            return [p for p in params if isinstance(p, dict)]
    return []


def check_template(obj: dict[str, Any], template: Template | None) -> str:
    """Only existing, APPROVED templates with the right parameters; returns the rendered body."""
    name = obj.get("name")
    language = obj.get("language")
    if not name:
        raise invalid_parameter("Param template['name'] is required.")
    if not isinstance(language, dict) or not language.get("code"):
        raise invalid_parameter("Param template['language']['code'] is required.")
    if template is None:
        raise GraphError(
            "(#132001) Template name does not exist in the translation",
            code=132001,
            error_subcode=None,
            details=f"template name ({name}) does not exist in {language.get('code')}",
        )
    if template.status is TemplateStatus.PAUSED:
        raise GraphError(
            "(#132015) Template is paused", code=132015, error_subcode=None, details=str(name)
        )
    if template.status is not TemplateStatus.APPROVED:
        raise GraphError(
            "(#132001) Template name does not exist in the translation",
            code=132001,
            error_subcode=None,
            details=f"template ({name}) is {template.status.value}, not APPROVED",
        )
    components = obj.get("components") or []
    if not isinstance(components, list):
        raise invalid_parameter("Param template['components'] must be a list.")
    body_text = next(
        (
            str(c.get("text", ""))
            for c in template.components
            if str(c.get("type", "")).upper() == "BODY"
        ),
        "",
    )
    expected = _PLACEHOLDER.findall(body_text)
    given = _component_params(components, "body")
    if len(given) != len(expected):
        raise GraphError(
            "(#132000) Number of parameters does not match the expected number of params",
            code=132000,
            error_subcode=None,
            details=f"body: number of localizable_params ({len(given)}) does not match "
            f"the expected number of params ({len(expected)})",
        )
    return render_template_text(body_text, given)


def render_template_text(body_text: str, params: list[dict[str, Any]]) -> str:
    """The body as the user sees it: positional `{{1}}` or named `{{name}}` filled in."""
    by_name = {str(p.get("parameter_name")): p for p in params if p.get("parameter_name")}

    def value(param: dict[str, Any] | None) -> str:
        if param is None:
            return ""
        kind = param.get("type", "text")
        inner = param.get(kind)
        if kind == "text":
            return str(param.get("text", ""))
        if isinstance(inner, dict):
            return str(inner.get("fallback_value") or inner.get("amount_1000") or "")
        return str(inner or "")

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in by_name:
            return value(by_name[key])
        if key.isdigit() and 0 < int(key) <= len(params):
            return value(params[int(key) - 1])
        return match.group(0)

    return _PLACEHOLDER.sub(substitute, body_text)
