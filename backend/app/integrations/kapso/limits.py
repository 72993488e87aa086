"""WhatsApp's limits, checked before a request leaves (lengths count Unicode code points)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from app.integrations.kapso.exceptions import KapsoRequestValidationError
from app.integrations.kapso.models import (
    ButtonsMessage,
    CtaUrlMessage,
    InteractiveMessage,
    ListMessage,
    ListSection,
    ReplyButton,
)

TEXT_BODY_MAX: Final = 4096
CAPTION_MAX: Final = 1024
INTERACTIVE_BODY_MAX: Final = 1024
HEADER_MAX: Final = 60
FOOTER_MAX: Final = 60
BUTTONS_MIN: Final = 1
BUTTONS_MAX: Final = 3
BUTTON_TITLE_MAX: Final = 20
BUTTON_ID_MAX: Final = 256
LIST_BUTTON_TEXT_MAX: Final = 20
LIST_SECTIONS_MAX: Final = 10
LIST_ROWS_TOTAL_MAX: Final = 10
LIST_SECTION_TITLE_MAX: Final = 24
LIST_ROW_ID_MAX: Final = 200
LIST_ROW_TITLE_MAX: Final = 24
LIST_ROW_DESCRIPTION_MAX: Final = 72
CTA_DISPLAY_TEXT_MAX: Final = 20
TEMPLATE_NAME_MAX: Final = 512
CALLBACK_DATA_MAX: Final = 512
FILENAME_MAX: Final = 240

_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]+$")
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")


def check_length(field: str, value: str, maximum: int, *, required: bool = True) -> None:
    """Raise naming `field` when `value` is empty (if required) or longer than `maximum`."""
    length = len(value)  # str length in Python is the number of code points
    if required and not value.strip():
        raise KapsoRequestValidationError(field, "must not be empty")
    if length > maximum:
        raise KapsoRequestValidationError(
            field, f"is {length} characters; WhatsApp allows at most {maximum}"
        )


def check_optional(field: str, value: str | None, maximum: int) -> None:
    if value is not None:
        check_length(field, value, maximum)


def validate_text(body: str, field: str = "text.body") -> None:
    check_length(field, body, TEXT_BODY_MAX)


def validate_caption(caption: str | None, field: str = "caption") -> None:
    if caption is not None:
        check_length(field, caption, CAPTION_MAX, required=False)


def validate_callback_data(value: str | None) -> None:
    if value is not None:
        check_length("biz_opaque_callback_data", value, CALLBACK_DATA_MAX)


def _validate_frame(header: str | None, body: str, footer: str | None) -> None:
    check_optional("interactive.header.text", header, HEADER_MAX)
    check_length("interactive.body.text", body, INTERACTIVE_BODY_MAX)
    check_optional("interactive.footer.text", footer, FOOTER_MAX)


def validate_buttons(buttons: Sequence[ReplyButton]) -> None:
    count = len(buttons)
    if not BUTTONS_MIN <= count <= BUTTONS_MAX:
        raise KapsoRequestValidationError(
            "interactive.action.buttons",
            f"has {count} buttons; WhatsApp allows {BUTTONS_MIN} to {BUTTONS_MAX}",
        )
    seen: set[str] = set()
    for i, button in enumerate(buttons):
        check_length(f"interactive.action.buttons[{i}].reply.id", button.id, BUTTON_ID_MAX)
        check_length(f"interactive.action.buttons[{i}].reply.title", button.title, BUTTON_TITLE_MAX)
        if button.id in seen:
            raise KapsoRequestValidationError(
                f"interactive.action.buttons[{i}].reply.id", "must be unique among the buttons"
            )
        seen.add(button.id)


def validate_sections(sections: Sequence[ListSection]) -> None:
    if not sections:
        raise KapsoRequestValidationError("interactive.action.sections", "must not be empty")
    if len(sections) > LIST_SECTIONS_MAX:
        raise KapsoRequestValidationError(
            "interactive.action.sections",
            f"has {len(sections)} sections; WhatsApp allows at most {LIST_SECTIONS_MAX}",
        )
    total_rows = sum(len(section.rows) for section in sections)
    if total_rows > LIST_ROWS_TOTAL_MAX:
        raise KapsoRequestValidationError(
            "interactive.action.sections",
            f"has {total_rows} rows in total; WhatsApp allows at most {LIST_ROWS_TOTAL_MAX}",
        )
    multiple = len(sections) > 1
    seen: set[str] = set()
    for s, section in enumerate(sections):
        prefix = f"interactive.action.sections[{s}]"
        if section.title is not None or multiple:
            # WhatsApp requires a section title as soon as there is more than one section.
            check_length(f"{prefix}.title", section.title or "", LIST_SECTION_TITLE_MAX)
        if not section.rows:
            raise KapsoRequestValidationError(f"{prefix}.rows", "must not be empty")
        for r, row in enumerate(section.rows):
            check_length(f"{prefix}.rows[{r}].id", row.id, LIST_ROW_ID_MAX)
            check_length(f"{prefix}.rows[{r}].title", row.title, LIST_ROW_TITLE_MAX)
            check_optional(
                f"{prefix}.rows[{r}].description", row.description, LIST_ROW_DESCRIPTION_MAX
            )
            if row.id in seen:
                raise KapsoRequestValidationError(
                    f"{prefix}.rows[{r}].id", "must be unique across the list"
                )
            seen.add(row.id)


def validate_interactive(message: InteractiveMessage) -> None:
    """Check an interactive message against WhatsApp's limits."""
    _validate_frame(message.header, message.body, message.footer)
    if isinstance(message, ButtonsMessage):
        validate_buttons(message.buttons)
    elif isinstance(message, ListMessage):
        check_length("interactive.action.button", message.button_text, LIST_BUTTON_TEXT_MAX)
        validate_sections(message.sections)
    elif isinstance(message, CtaUrlMessage):
        check_length(
            "interactive.action.parameters.display_text",
            message.display_text,
            CTA_DISPLAY_TEXT_MAX,
        )
        if not message.url.startswith(("https://", "http://")):
            raise KapsoRequestValidationError(
                "interactive.action.parameters.url", "must be an http(s) URL"
            )


def validate_template_name(name: str) -> None:
    check_length("template.name", name, TEMPLATE_NAME_MAX)
    if not _TEMPLATE_NAME.match(name):
        raise KapsoRequestValidationError(
            "template.name", "may contain only lowercase letters, digits and underscores"
        )


def validate_language_code(code: str) -> None:
    if not _LANGUAGE_CODE.match(code):
        raise KapsoRequestValidationError(
            "template.language.code", "must look like `es`, `es_CL` or `en_US`"
        )
