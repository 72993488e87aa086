"""Conversations (Platform API v1): list, search, get, end/reopen, walk every page."""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator
from datetime import datetime

from app.integrations.kapso.api.base import BaseAPI, KapsoHTTP, parse_model
from app.integrations.kapso.api.pagination import MAX_PAGE_SIZE, iso, iterate_pages
from app.integrations.kapso.models import (
    Contact,
    Conversation,
    ConversationStatus,
    CursorPage,
    DataEnvelope,
)

_PHONE_FRAGMENT = re.compile(r"^[+\d\s().-]+$")
SEARCH_CONTACTS_LIMIT = 10


class ConversationsAPI(BaseAPI):
    """WhatsApp conversations of the project."""

    def __init__(self, http: KapsoHTTP) -> None:
        super().__init__(http)

    async def list(
        self,
        *,
        status: ConversationStatus | None = None,
        phone_number: str | None = None,
        phone_number_id: str | None = None,
        last_active_since: datetime | None = None,
        last_active_until: datetime | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> CursorPage[Conversation]:
        """One page of conversations, most recently active first."""
        data = await self._http.request_json(
            "GET",
            self._http.platform_url("whatsapp/conversations"),
            params={
                "status": status,
                "phone_number": phone_number,
                "phone_number_id": phone_number_id,
                "last_active_since": iso(last_active_since),
                "last_active_until": iso(last_active_until),
                "created_after": iso(created_after),
                "created_before": iso(created_before),
                "limit": limit,
                "after": after,
                "before": before,
            },
        )
        return parse_model(CursorPage[Conversation], data)

    async def iterate(
        self,
        *,
        status: ConversationStatus | None = None,
        phone_number: str | None = None,
        phone_number_id: str | None = None,
        last_active_since: datetime | None = None,
        last_active_until: datetime | None = None,
    ) -> AsyncIterator[Conversation]:
        """Every conversation matching the filters, across all pages."""

        async def fetch(after: str | None) -> CursorPage[Conversation]:
            return await self.list(
                status=status,
                phone_number=phone_number,
                phone_number_id=phone_number_id,
                last_active_since=last_active_since,
                last_active_until=last_active_until,
                limit=MAX_PAGE_SIZE,
                after=after,
            )

        async for conversation in iterate_pages(fetch):
            yield conversation

    async def search(
        self, query: str, status: ConversationStatus | None = None, *, limit: int = 20
    ) -> builtins.list[Conversation]:
        """Conversations whose phone contains a fragment, or whose contact name matches."""
        query = query.strip()
        if not query:
            return []
        if _PHONE_FRAGMENT.match(query):
            digits = "".join(ch for ch in query if ch.isdigit())
            page = await self.list(status=status, phone_number=digits, limit=limit)
            return page.data
        # The conversations API filters by phone only: find contacts by name, then theirs.
        contacts = await self._http.request_json(
            "GET",
            self._http.platform_url("whatsapp/contacts"),
            params={"profile_name_contains": query, "limit": SEARCH_CONTACTS_LIMIT},
        )
        found: dict[str, Conversation] = {}
        for contact in parse_model(CursorPage[Contact], contacts).data:
            if not contact.wa_id:
                continue
            page = await self.list(status=status, phone_number=contact.wa_id, limit=limit)
            for conversation in page.data:
                found.setdefault(conversation.id, conversation)
            if len(found) >= limit:
                break
        return list(found.values())[:limit]

    async def get(self, conversation_id: str) -> Conversation:
        """One conversation by its Kapso id."""
        data = await self._http.request_json(
            "GET", self._http.platform_url(f"whatsapp/conversations/{conversation_id}")
        )
        return parse_model(DataEnvelope[Conversation], data).data

    async def update_status(self, conversation_id: str, status: ConversationStatus) -> Conversation:
        """End or reopen a conversation."""
        data = await self._http.request_json(
            "PATCH",
            self._http.platform_url(f"whatsapp/conversations/{conversation_id}"),
            json={"whatsapp_conversation": {"status": status}},
        )
        return parse_model(DataEnvelope[Conversation], data).data

    async def end(self, conversation_id: str) -> Conversation:
        return await self.update_status(conversation_id, "ended")

    async def reopen(self, conversation_id: str) -> Conversation:
        return await self.update_status(conversation_id, "active")
