"""Status webhooks on a real store (PostgreSQL): when a send-API message's copy is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from app.dev_seed import DirectorySeeder
from app.integrations.kapso.api.webhooks import parse_webhook
from app.repositories.models import (
    InboxEvent,
    MessageRole,
    NewOutboundMessage,
    OutboundStatus,
    WhatsAppConversationMetadata,
)
from app.repositories.stores import Stores
from app.services.whatsapp.conversation_manager import WhatsAppConversationManager
from app.services.whatsapp.event_processor import WhatsAppEventProcessor
from app.services.whatsapp.webhook_ingest import to_inbox_events
from support.store_data import make_member

DELIVERED = (
    Path(__file__).parents[2]
    / "integrations"
    / "kapso"
    / "fixtures"
    / "kapso-webhooks"
    / "v2"
    / "message.delivered.json"
)


async def _delivered_event(stores: Stores) -> InboxEvent:
    raw_body = DELIVERED.read_bytes()
    headers = {"x-idempotency-key": "delivered-1"}
    events = parse_webhook(raw_body, event="whatsapp.message.delivered", payload_version="v2")
    await stores.inbox.record_inbox_events(to_inbox_events(events, raw_body, headers))
    (claimed,) = await stores.inbox.claim_inbox_events(
        owner="w", limit=1, lease_seconds=30, max_attempts=3
    )
    return claimed


async def test_a_progress_status_stores_no_copy_but_a_retry_makes_sure(
    stores: Stores, seeder: DirectorySeeder
) -> None:
    """An accepted send's copy was stored with its status; a delivered webhook has nothing
    to add. Unless it runs again: an earlier attempt may have failed before storing a copy
    that was missing, so the retry stores it (once)."""
    event = await _delivered_event(stores)
    assert event.wamid is not None
    wamid = event.wamid
    profile, company = await make_member(seeder)
    conversation = (
        await stores.conversations.get_or_create_conversation(
            kapso_conversation_id="5f0c9a4e-2b7d-4c1e-9a55-3e1f0b6d2a71",
            user_id=profile.id,
            metadata=WhatsAppConversationMetadata(
                user_id=profile.id, company_id=company.id, resolved_at=datetime.now(UTC)
            ),
        )
    ).conversation
    # An API send accepted by Kapso whose copy is missing (the store failed right after).
    recorded = await stores.outbound.record_outbound(
        NewOutboundMessage(
            to_phone="+56912345678",
            message_type="text",
            purpose="api",
            conversation_id=conversation.id,
            user_id=profile.id,
            content="Tu IVA estimado de noviembre es $152.300.",
        )
    )
    await stores.outbound.advance_outbound_status(
        recorded.message.id, OutboundStatus.SENT, wamid=wamid
    )
    manager = WhatsAppConversationManager(stores.conversations)
    # A status event never reaches the inbound flow.
    processor = WhatsAppEventProcessor(
        outbound=stores.outbound, conversations=manager, inbound=cast(Any, None)
    )

    await processor.process(event)
    outbound = await stores.outbound.get_outbound(recorded.message.id)
    assert outbound is not None
    assert outbound.status is OutboundStatus.DELIVERED
    assert await stores.conversations.find_message_by_wamid(wamid) is None

    retried = event.model_copy(update={"attempts": 2})
    await processor.process(retried)
    await processor.process(retried)
    messages = await stores.conversations.list_messages(conversation.id)
    assert [(m.role, m.content, m.metadata.whatsapp_message_id) for m in messages] == [
        (MessageRole.ASSISTANT, "Tu IVA estimado de noviembre es $152.300.", wamid)
    ]
