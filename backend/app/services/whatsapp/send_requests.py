"""The bodies of `/api/whatsapp/send/*`: strict, with WhatsApp's limits as field constraints.

Unknown fields are refused (no mass assignment of `company_id`, `user_id`, ...). Every limit
is a field constraint, so a violation is a 422 naming the field before Kapso is called.
Lengths count Unicode code points, as WhatsApp does. Rules across fields are checked by
`check()`, which names the field too (a model validator could not).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator

from app.core.errors import UnprocessableError
from app.integrations.kapso import limits


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # JSON can escape a NUL; PostgreSQL text cannot hold one, and WhatsApp shows no such text.
        if _has_nul(value):
            raise ValueError("must not contain the NUL character (\\u0000)")
        return value

    def check(self) -> None:
        """Rules across fields; raises `UnprocessableError` naming the field."""


def _has_nul(value: object) -> bool:
    """A NUL in a string, or in the strings of a list or dict (nested models check their own)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    return False


def invalid(field: str, message: str) -> UnprocessableError:
    return UnprocessableError(message, field=field)


NonBlank = Annotated[str, StringConstraints(pattern=r"\S")]
# It becomes a segment of Kapso's URL path: no slash, dot or control character may pass.
BusinessNumberId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ConversationSelector(StrictBody):
    """Which conversation: `conversation_id` (Kapso's, as this API returns it) wins; else the
    phone number's latest conversation on the chosen business number."""

    conversation_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    phone_number: Annotated[str, Field(min_length=4, max_length=32)] | None = Field(
        default=None, examples=["+56912345678"]
    )

    def check(self) -> None:
        if self.conversation_id is None and self.phone_number is None:
            raise invalid("conversation_selector", "give conversation_id or phone_number")


class SendTextRequest(StrictBody):
    conversation_selector: ConversationSelector
    content: Annotated[NonBlank, Field(max_length=limits.TEXT_BODY_MAX, examples=["¡Hola!"])]
    whatsapp_config_id: BusinessNumberId | None = Field(
        default=None, description="Business phone number id to send from (default: ours)."
    )
    preview_url: bool = False

    def check(self) -> None:
        self.conversation_selector.check()


MediaKind = Literal["image", "video", "audio", "document"]


class SendMediaRequest(StrictBody):
    conversation_selector: ConversationSelector
    file_url: HttpUrl
    message_type: MediaKind
    caption: Annotated[str, Field(max_length=limits.CAPTION_MAX)] | None = None
    filename: Annotated[str, Field(min_length=1, max_length=limits.FILENAME_MAX)] | None = None
    whatsapp_config_id: BusinessNumberId | None = None

    def check(self) -> None:
        self.conversation_selector.check()
        if self.caption is not None and self.message_type == "audio":
            raise invalid("caption", "audio messages take no caption")
        if self.filename is not None and self.message_type != "document":
            raise invalid("filename", "only documents take a filename")


class Button(StrictBody):
    id: Annotated[NonBlank, Field(max_length=limits.BUTTON_ID_MAX)]
    title: Annotated[NonBlank, Field(max_length=limits.BUTTON_TITLE_MAX)]


class ListRowBody(StrictBody):
    id: Annotated[NonBlank, Field(max_length=limits.LIST_ROW_ID_MAX)]
    title: Annotated[NonBlank, Field(max_length=limits.LIST_ROW_TITLE_MAX)]
    description: Annotated[str, Field(max_length=limits.LIST_ROW_DESCRIPTION_MAX)] | None = None


class ListSectionBody(StrictBody):
    title: Annotated[NonBlank, Field(max_length=limits.LIST_SECTION_TITLE_MAX)] | None = None
    rows: Annotated[list[ListRowBody], Field(min_length=1, max_length=limits.LIST_ROWS_TOTAL_MAX)]


class SendInteractiveRequest(StrictBody):
    conversation_selector: ConversationSelector
    interactive_type: Literal["button", "list"]
    body_text: Annotated[NonBlank, Field(max_length=limits.INTERACTIVE_BODY_MAX)]
    header_text: Annotated[NonBlank, Field(max_length=limits.HEADER_MAX)] | None = None
    footer_text: Annotated[NonBlank, Field(max_length=limits.FOOTER_MAX)] | None = None
    buttons: (
        Annotated[list[Button], Field(min_length=limits.BUTTONS_MIN, max_length=limits.BUTTONS_MAX)]
        | None
    ) = None
    sections: (
        Annotated[list[ListSectionBody], Field(min_length=1, max_length=limits.LIST_SECTIONS_MAX)]
        | None
    ) = None
    list_button_text: Annotated[NonBlank, Field(max_length=limits.LIST_BUTTON_TEXT_MAX)] | None = (
        None
    )
    whatsapp_config_id: BusinessNumberId | None = None

    def check(self) -> None:
        self.conversation_selector.check()
        if self.interactive_type == "button":
            if not self.buttons:
                raise invalid("buttons", "a button message needs 1 to 3 buttons")
            if self.sections is not None:
                raise invalid("sections", "only list messages take sections")
            if self.list_button_text is not None:
                raise invalid("list_button_text", "only list messages take a list button")
            if len({b.id for b in self.buttons}) != len(self.buttons):
                raise invalid("buttons", "button ids must be unique")
            return
        if not self.sections:
            raise invalid("sections", "a list message needs at least one section")
        if self.list_button_text is None:
            raise invalid("list_button_text", "a list message needs the text of its button")
        if self.buttons is not None:
            raise invalid("buttons", "only button messages take buttons")
        rows = sum(len(section.rows) for section in self.sections)
        if rows > limits.LIST_ROWS_TOTAL_MAX:
            raise invalid(
                "sections",
                f"{rows} rows in total; WhatsApp allows at most {limits.LIST_ROWS_TOTAL_MAX}",
            )
        for index, section in enumerate(self.sections):
            if len(self.sections) > 1 and section.title is None:
                raise invalid(f"sections.{index}.title", "required when there are several")
        ids = [row.id for section in self.sections for row in section.rows]
        if len(set(ids)) != len(ids):
            raise invalid("sections", "row ids must be unique across the list")


TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=limits.TEXT_BODY_MAX)]


class TemplateButtonParameterBody(StrictBody):
    index: Annotated[int, Field(ge=0, le=9)]
    sub_type: Literal["quick_reply", "url", "copy_code"] = "quick_reply"
    value: Annotated[str, Field(min_length=1, max_length=2000)]


class TemplateParameters(StrictBody):
    """Named (`{"codigo": "123456"}`) or positional (`["María"]`) parameters per component."""

    header: list[TemplateText] | dict[str, TemplateText] | None = None
    body: list[TemplateText] | dict[str, TemplateText] | None = None
    buttons: list[TemplateButtonParameterBody] = Field(default_factory=list)


class SendTemplateRequest(StrictBody):
    """A template: the only kind of message allowed outside the 24-hour window."""

    conversation_selector: ConversationSelector | None = None
    phone_number: Annotated[str, Field(min_length=4, max_length=32)] | None = None
    template_name: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9_]+$", max_length=limits.TEMPLATE_NAME_MAX)
    ]
    language_code: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")] = "es"
    parameters: TemplateParameters = Field(default_factory=TemplateParameters)
    whatsapp_config_id: BusinessNumberId | None = None

    def check(self) -> None:
        if self.conversation_selector is None and self.phone_number is None:
            raise invalid("conversation_selector", "give conversation_selector or phone_number")
        self.selector.check()

    @property
    def selector(self) -> ConversationSelector:
        return self.conversation_selector or ConversationSelector(phone_number=self.phone_number)


class SendResponse(BaseModel):
    """The seed's send response; `status` is Kapso's acceptance (`sent`)."""

    success: bool = True
    message_id: str = Field(description="The WhatsApp message id (wamid).")
    conversation_id: str | None = Field(
        description="Kapso's conversation id, when the message belongs to a stored conversation."
    )
    status: str = Field(examples=["sent"])
