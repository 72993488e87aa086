"""Contacts (Platform API v1), their message history, and notes (legacy API only)."""

from __future__ import annotations

import builtins
import re
from datetime import datetime
from typing import Any

from app.integrations.kapso.api.base import BaseAPI, parse_model
from app.integrations.kapso.api.messages import Direction
from app.integrations.kapso.api.pagination import iso
from app.integrations.kapso.models import (
    Contact,
    ContactNote,
    CursorPage,
    DataEnvelope,
    MessageRecord,
)

_PHONE_FRAGMENT = re.compile(r"^[+\d\s().-]+$")


def _unwrap(data: Any) -> Any:
    """The legacy API wraps records in `{"data": ...}`, but not always."""
    if isinstance(data, dict) and "data" in data and len(data) <= 2:
        return data["data"]
    return data


class ContactsAPI(BaseAPI):
    """WhatsApp contacts: the people who wrote to the project's numbers."""

    async def list(
        self,
        *,
        wa_id_contains: str | None = None,
        profile_name_contains: str | None = None,
        customer_id: str | None = None,
        has_customer: bool | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> CursorPage[Contact]:
        data = await self._http.request_json(
            "GET",
            self._http.platform_url("whatsapp/contacts"),
            params={
                "wa_id_contains": wa_id_contains,
                "profile_name_contains": profile_name_contains,
                "customer_id": customer_id,
                "has_customer": has_customer,
                "created_after": iso(created_after),
                "created_before": iso(created_before),
                "limit": limit,
                "after": after,
                "before": before,
            },
        )
        return parse_model(CursorPage[Contact], data)

    async def search(self, query: str, *, limit: int = 20) -> builtins.list[Contact]:
        """Contacts whose number contains a fragment (`+569`), or whose name contains text."""
        query = query.strip()
        if not query:
            return []
        if _PHONE_FRAGMENT.match(query):
            digits = "".join(ch for ch in query if ch.isdigit())
            return (await self.list(wa_id_contains=digits, limit=limit)).data
        return (await self.list(profile_name_contains=query, limit=limit)).data

    async def get(self, identifier: str) -> Contact:
        """A contact by uuid, phone number or business-scoped id."""
        data = await self._http.request_json(
            "GET", self._http.platform_url(f"whatsapp/contacts/{identifier}")
        )
        return parse_model(DataEnvelope[Contact], data).data

    async def create(
        self,
        *,
        wa_id: str,
        profile_name: str | None = None,
        display_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Contact:
        contact: dict[str, Any] = {"wa_id": wa_id}
        if profile_name is not None:
            contact["profile_name"] = profile_name
        if display_name is not None:
            contact["display_name"] = display_name
        if metadata is not None:
            contact["metadata"] = metadata
        data = await self._http.request_json(
            "POST", self._http.platform_url("whatsapp/contacts"), json={"contact": contact}
        )
        return parse_model(DataEnvelope[Contact], data).data

    async def update(
        self,
        identifier: str,
        *,
        profile_name: str | None = None,
        display_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Contact:
        """Change a contact's names or metadata (only the fields given)."""
        changes: dict[str, Any] = {}
        if profile_name is not None:
            changes["profile_name"] = profile_name
        if display_name is not None:
            changes["display_name"] = display_name
        if metadata is not None:
            changes["metadata"] = metadata
        data = await self._http.request_json(
            "PATCH",
            self._http.platform_url(f"whatsapp/contacts/{identifier}"),
            json={"contact": changes},
        )
        return parse_model(DataEnvelope[Contact], data).data

    async def delete(self, identifier: str) -> None:
        """Erase a contact (Kapso does it asynchronously and answers 204)."""
        await self._http.request(
            "DELETE", self._http.platform_url(f"whatsapp/contacts/{identifier}")
        )

    async def history(
        self,
        phone_number: str,
        *,
        phone_number_id: str | None = None,
        direction: Direction | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> CursorPage[MessageRecord]:
        """A contact's messages, newest first (Platform messages filtered by phone)."""
        data = await self._http.request_json(
            "GET",
            self._http.platform_url("whatsapp/messages"),
            params={
                "phone_number": phone_number,
                "phone_number_id": phone_number_id,
                "direction": direction,
                "limit": limit,
                "after": after,
            },
        )
        return parse_model(CursorPage[MessageRecord], data)

    async def list_notes(self, identifier: str) -> builtins.list[ContactNote]:
        """Notes on a contact (they exist only in Kapso's legacy API)."""
        data = await self._http.request_json(
            "GET", self._http.legacy_url(f"whatsapp_contacts/{identifier}/notes")
        )
        return [parse_model(ContactNote, item) for item in _unwrap(data) or []]

    async def add_note(
        self,
        identifier: str,
        *,
        content: str,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ContactNote:
        note: dict[str, Any] = {"content": content}
        if name is not None:
            note["name"] = name
        if metadata is not None:
            note["metadata"] = metadata
        data = await self._http.request_json(
            "POST",
            self._http.legacy_url(f"whatsapp_contacts/{identifier}/notes"),
            json={"note": note},
        )
        return parse_model(ContactNote, _unwrap(data))
