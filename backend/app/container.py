"""The composition root: every long-lived object, built once per process from settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.core.jwt_verifier import JWTVerifier
from app.core.settings import Settings
from app.integrations.kapso import KapsoClient
from app.repositories.factory import create_whatsapp_repository
from app.repositories.whatsapp import WhatsAppRepository
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
    repository: WhatsAppRepository
    http: httpx.AsyncClient
    jwt_verifier: JWTVerifier
    ingest: WebhookIngestService
    processor: WhatsAppEventProcessor
    worker: InboxWorker
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
    repository: WhatsAppRepository | None = None,
) -> AsyncIterator[Container]:
    """Build everything once; close it all on exit."""
    texts = WhatsAppTexts.load(settings.whatsapp_texts_file)
    async with contextlib.AsyncExitStack() as stack:
        kapso = build_kapso_client(settings)
        stack.push_async_callback(kapso.aclose)
        http = httpx.AsyncClient(timeout=10.0)
        stack.push_async_callback(http.aclose)
        if repository is None:
            repository = await create_whatsapp_repository(settings)
            stack.push_async_callback(repository.aclose)
        conversations = WhatsAppConversationManager(repository)
        sender = OutboundSender(
            repository, kapso, settle_after=timedelta(seconds=settings.worker_settle_seconds)
        )
        inbound = InboundMessageHandler(
            repository=repository,
            kapso=kapso,
            authenticator=PhoneAuthenticator(
                repository, cache_ttl=timedelta(seconds=settings.auth_cache_ttl_seconds)
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
            repository=repository, conversations=conversations, inbound=inbound
        )
        worker = InboxWorker(repository, processor.process, worker_policy(settings))
        ingest = WebhookIngestService(
            repository, secret=settings.kapso_webhook_secret, on_recorded=worker.wake
        )
        yield Container(
            settings=settings,
            kapso=kapso,
            repository=repository,
            http=http,
            jwt_verifier=JWTVerifier.from_settings(settings, http),
            ingest=ingest,
            processor=processor,
            worker=worker,
            inbox_admin=InboxAdminService(repository),
            whatsapp=WhatsAppService(
                repository=repository,
                kapso=kapso,
                conversations=conversations,
                access=ConversationAccess(repository, settings.kapso_phone_number_id),
                rate_limiter=SendRateLimiter(settings.send_rate_limit_per_minute),
            ),
        )
