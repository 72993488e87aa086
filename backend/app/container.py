"""The composition root: every long-lived object, built once per process from settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.core.jwt_verifier import JWTVerifier
from app.core.settings import Settings
from app.db.connect import open_database
from app.integrations.kapso import KapsoClient
from app.repositories.inbox import InboxNotifications
from app.repositories.stores import Stores
from app.services.whatsapp.access import ConversationAccess
from app.services.whatsapp.auth import PhoneAuthenticator
from app.services.whatsapp.conversation_manager import WhatsAppConversationManager
from app.services.whatsapp.event_processor import WhatsAppEventProcessor
from app.services.whatsapp.inbound import InboundMessageHandler, InboundPolicy
from app.services.whatsapp.inbox_admin import InboxAdminService
from app.services.whatsapp.inbox_worker import InboxWorker, WorkerPolicy
from app.services.whatsapp.outbound import OutboundSender
from app.services.whatsapp.rate_limit import SendRateLimiter
from app.services.whatsapp.responder import AcknowledgementResponder, Responder
from app.services.whatsapp.service import WhatsAppService
from app.services.whatsapp.texts import WhatsAppTexts
from app.services.whatsapp.webhook_ingest import WebhookIngestService


@dataclass
class Container:
    """What routes, the worker and tests reach through `app.state.container`."""

    settings: Settings
    kapso: KapsoClient
    stores: Stores
    http: httpx.AsyncClient
    jwt_verifier: JWTVerifier
    ingest: WebhookIngestService
    processor: WhatsAppEventProcessor
    worker: InboxWorker
    # Wakes `worker` when any process records events (LISTEN/NOTIFY); started with the worker.
    notifications: InboxNotifications
    inbox_admin: InboxAdminService
    whatsapp: WhatsAppService


def build_kapso_client(settings: Settings) -> KapsoClient:
    """The process's one Kapso client, configured from settings."""
    api_key = settings.kapso_api_key.get_secret_value() if settings.kapso_api_key else ""
    return KapsoClient(
        api_token=api_key,
        base_url=settings.kapso_base_url,
        legacy_base_url=settings.kapso_legacy_root,
        graph_version=settings.kapso_graph_version,
        phone_number_id=settings.kapso_phone_number_id,
        waba_id=settings.kapso_waba_id,
        timeout=settings.kapso_timeout_seconds,
        max_retries=settings.kapso_max_retries,
    )


def worker_policy(settings: Settings) -> WorkerPolicy:
    return WorkerPolicy(
        concurrency=settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        lease_seconds=settings.worker_lease_seconds,
        poll_seconds=settings.worker_poll_seconds,
        max_attempts=settings.worker_max_attempts,
        retry_base_seconds=settings.worker_retry_base_seconds,
        retry_max_seconds=settings.worker_retry_max_seconds,
    )


@contextlib.asynccontextmanager
async def build_container(
    settings: Settings,
    *,
    responder: Responder | None = None,
    stores: Stores | None = None,
) -> AsyncIterator[Container]:
    """Build everything once; close it all on exit (`stores`: tests bring their own)."""
    texts = WhatsAppTexts.load(settings.whatsapp_texts_file)
    async with contextlib.AsyncExitStack() as stack:
        kapso = build_kapso_client(settings)
        stack.push_async_callback(kapso.aclose)
        http = httpx.AsyncClient(timeout=10.0)
        stack.push_async_callback(http.aclose)
        if stores is None:
            stores = Stores.on(await stack.enter_async_context(open_database(settings)))
        conversations = WhatsAppConversationManager(stores.conversations)
        sender = OutboundSender(
            stores, kapso, settle_after=timedelta(seconds=settings.worker_settle_seconds)
        )
        inbound = InboundMessageHandler(
            stores=stores,
            kapso=kapso,
            authenticator=PhoneAuthenticator(
                stores.directory, cache_ttl=timedelta(seconds=settings.auth_cache_ttl_seconds)
            ),
            conversations=conversations,
            sender=sender,
            responder=responder or AcknowledgementResponder(texts),
            texts=texts,
            policy=InboundPolicy(
                notice_interval=timedelta(seconds=settings.registration_notice_interval_seconds),
                fizko_app_url=settings.fizko_app_url,
                default_phone_number_id=settings.kapso_phone_number_id,
            ),
        )
        processor = WhatsAppEventProcessor(
            outbound=stores.outbound, conversations=conversations, inbound=inbound
        )
        worker = InboxWorker(stores.inbox, processor.process, worker_policy(settings))
        ingest = WebhookIngestService(
            stores.inbox, secret=settings.kapso_webhook_secret, on_recorded=worker.wake
        )
        yield Container(
            settings=settings,
            kapso=kapso,
            stores=stores,
            http=http,
            jwt_verifier=JWTVerifier.from_settings(settings, http),
            ingest=ingest,
            processor=processor,
            worker=worker,
            notifications=InboxNotifications(stores.database, worker.wake),
            inbox_admin=InboxAdminService(stores.inbox),
            whatsapp=WhatsAppService(
                stores=stores,
                kapso=kapso,
                conversations=conversations,
                access=ConversationAccess(
                    stores.directory, stores.conversations, settings.kapso_phone_number_id
                ),
                rate_limiter=SendRateLimiter(settings.send_rate_limit_per_minute),
            ),
        )
