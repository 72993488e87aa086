"""Message templates of a WhatsApp Business Account (Meta proxy), and sending them."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Literal

from app.integrations.kapso import limits
from app.integrations.kapso.api.base import BaseAPI, KapsoHTTP, parse_model
from app.integrations.kapso.api.messages import MessagesAPI, TemplateParameters
from app.integrations.kapso.exceptions import KapsoConfigurationError, KapsoNotFoundError
from app.integrations.kapso.models import (
    CursorPage,
    DeleteResult,
    SendResult,
    Template,
    TemplateButtonParameter,
    TemplateCreateResult,
    TemplateMedia,
)

TemplateCategory = Literal["AUTHENTICATION", "MARKETING", "UTILITY"]


class TemplatesAPI(BaseAPI):
    """List, inspect, create, delete and send templates."""

    def __init__(self, http: KapsoHTTP, messages: MessagesAPI, waba_id: str | None) -> None:
        super().__init__(http)
        self._messages = messages
        self._waba_id = waba_id

    def _waba(self, waba_id: str | None) -> str:
        chosen = waba_id or self._waba_id
        if not chosen:
            raise KapsoConfigurationError(
                "waba_id is required for templates (set KAPSO_WABA_ID or pass waba_id)"
            )
        return chosen

    async def list(
        self,
        *,
        waba_id: str | None = None,
        name: str | None = None,
        status: str | None = None,
        category: str | None = None,
        language: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> CursorPage[Template]:
        data = await self._http.request_json(
            "GET",
            self._http.proxy_url(f"{self._waba(waba_id)}/message_templates"),
            params={
                "name": name,
                "status": status,
                "category": category,
                "language": language,
                "limit": limit,
                "after": after,
            },
        )
        return parse_model(CursorPage[Template], data)

    async def get(
        self, name: str, *, language: str | None = None, waba_id: str | None = None
    ) -> Template:
        """A template by exact name (and language, when a name has several)."""
        page = await self.list(waba_id=waba_id, name=name, language=language)
        for template in page.data:
            if template.name == name and (language is None or template.language == language):
                return template
        raise KapsoNotFoundError(f"Template {name!r} not found", 404)

    async def create(
        self,
        *,
        name: str,
        language: str,
        category: TemplateCategory,
        components: builtins.list[dict[str, Any]],
        parameter_format: Literal["NAMED", "POSITIONAL"] = "POSITIONAL",
        waba_id: str | None = None,
    ) -> TemplateCreateResult:
        """Submit a template for Meta's review (it starts as PENDING)."""
        limits.validate_template_name(name)
        limits.validate_language_code(language)
        data = await self._http.request_json(
            "POST",
            self._http.proxy_url(f"{self._waba(waba_id)}/message_templates"),
            json={
                "name": name,
                "language": language,
                "category": category,
                "parameter_format": parameter_format,
                "components": components,
            },
        )
        return parse_model(TemplateCreateResult, data)

    async def delete(self, name: str, *, waba_id: str | None = None) -> bool:
        data = await self._http.request_json(
            "DELETE",
            self._http.proxy_url(f"{self._waba(waba_id)}/message_templates"),
            params={"name": name},
        )
        return data is None or parse_model(DeleteResult, data).success

    async def send(
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
        """Send a template (same as `messages.send_template`)."""
        return await self._messages.send_template(
            template_name=template_name,
            language_code=language_code,
            body_parameters=body_parameters,
            header_parameters=header_parameters,
            header_media=header_media,
            button_parameters=button_parameters,
            conversation_id=conversation_id,
            phone_number_id=phone_number_id,
            to=to,
            callback_data=callback_data,
        )
