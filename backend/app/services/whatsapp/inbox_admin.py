"""Operating the inbox: see what failed, and replay it once the cause is fixed."""

from __future__ import annotations

from uuid import UUID

from app.core.errors import ConflictError, NotFoundError
from app.repositories.inbox import InboxStore
from app.repositories.models import InboxEvent, InboxState


class InboxAdminService:
    def __init__(self, inbox: InboxStore) -> None:
        self._inbox = inbox

    async def list_events(self, state: InboxState, *, limit: int, offset: int) -> list[InboxEvent]:
        return await self._inbox.list_inbox_events(state, limit=limit, offset=offset)

    async def replay(self, event_id: UUID) -> InboxEvent:
        """Put a dead event back in the queue (attempts reset); 409 if it is not dead."""
        replayed = await self._inbox.requeue_inbox_event(event_id)
        if replayed is not None:
            return replayed
        current = await self._inbox.get_inbox_event(event_id)
        if current is None:
            raise NotFoundError(f"No inbox event {event_id}")
        raise ConflictError(
            f"Only dead events can be replayed; this one is {current.state.value}",
            code="event_not_dead",
        )
