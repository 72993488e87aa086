"""The whole local flow over real HTTP: the Kapso emulator and the service, wired together."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.core.settings import Settings
from app.db.pool import Database, PoolOptions
from app.dev_seed import DirectorySeeder
from app.main import create_app
from app.repositories.inbox import InboxStore
from app.repositories.stores import Stores
from app.services.whatsapp.responder import Responder
from kapso_emulator.app import EmulatorApp
from kapso_emulator.app import create_app as create_emulator
from kapso_emulator.config import EmulatorConfig, StatusDelays
from support.asgi_server import serve

API_KEY = "e2e-kapso-key"
WEBHOOK_SECRET = "e2e-webhook-secret"
PHONE_NUMBER_ID = "1029384756"
WABA_ID = "102290129340398"
JWT_SECRET = "e2e-jwt-secret-that-is-long-enough-0123456789"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class LocalFlow:
    """A running emulator and service, plus clients to drive and inspect both; `stores` and
    `seeder` reach the service's database directly (a pool of the test's own)."""

    service_url: str
    emulator_url: str
    emulator_app: EmulatorApp
    control: httpx.AsyncClient
    service: httpx.AsyncClient
    stores: Stores
    seeder: DirectorySeeder
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)

    async def say(self, phone: str, text: str = "Hola", **body: Any) -> dict[str, Any]:
        """The user writes (the emulator delivers `whatsapp.message.received`)."""
        response = await self.control.post(
            "/_emulator/inbound", json={"phone": phone, "text": text, **body}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def outbox(
        self, phone: str | None = None, *, wait_count: int = 0, wait_seconds: float = 10.0
    ) -> list[dict[str, Any]]:
        """What the service sent (messages only), waiting for `wait_count` of them."""
        params: dict[str, Any] = {"kind": "message", "wait_count": wait_count}
        params["wait_seconds"] = wait_seconds
        if phone:
            params["to"] = phone
        response = await self.control.get("/_emulator/outbox", params=params)
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def configure_emulator(self, **patch: Any) -> None:
        response = await self.control.patch("/_emulator/config", json=patch)
        assert response.status_code == 200, response.text

    async def fault(self, **fault: Any) -> None:
        response = await self.control.post("/_emulator/faults", json=fault)
        assert response.status_code == 201, response.text

    async def drain_deliveries(self) -> None:
        response = await self.control.post("/_emulator/deliveries/drain", json={"wait_seconds": 30})
        assert response.json()["drained"] is True

    async def post_webhook(
        self,
        body: bytes | dict[str, Any],
        *,
        event: str = "whatsapp.message.received",
        key: str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {
            "Content-Type": "application/json",
            "X-Webhook-Event": event,
            "X-Webhook-Payload-Version": "v2",
            "X-Webhook-Signature": signature if signature is not None else sign(raw),
        }
        if key is not None:
            sent["X-Idempotency-Key"] = key
        sent.update(headers or {})
        return await self.service.post("/api/whatsapp/webhook", content=raw, headers=sent)


def flow_settings(database_url: str, emulator_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": SecretStr(database_url),
        "kapso_api_key": SecretStr(API_KEY),
        "kapso_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "kapso_base_url": emulator_url,
        "kapso_phone_number_id": PHONE_NUMBER_ID,
        "kapso_waba_id": WABA_ID,
        "kapso_timeout_seconds": 5.0,
        "supabase_jwt_secret": SecretStr(JWT_SECRET),
        "worker_poll_seconds": 0.05,
        "worker_retry_base_seconds": 0.05,
        "worker_retry_max_seconds": 0.2,
        "worker_settle_seconds": 0.3,
        "worker_lease_seconds": 5.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def local_flow(
    database_url: str,
    *,
    responder: Responder | None = None,
    emulator_config: dict[str, Any] | None = None,
    service_database_url: str | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[LocalFlow]:
    """Start the emulator, then the service (on the database `database_url`) pointed at it,
    then point the emulator's webhook at the service. `service_database_url`: the service
    reaches that database by another way (a proxy a test can cut), the test's pool does not."""
    config = EmulatorConfig(
        webhook_secret=WEBHOOK_SECRET,
        api_key=API_KEY,
        time_scale=0.01,
        webhook_timeout_seconds=500.0,
        status_delays=StatusDelays(sent=0, delivered=0.5, read=1.0),
        **(emulator_config or {}),
    )
    emulator_app = create_emulator(config)
    assert isinstance(emulator_app, EmulatorApp)
    async with serve(emulator_app) as emulator_url:
        settings = flow_settings(
            service_database_url or database_url, emulator_url, **settings_overrides
        )
        app = create_app(settings, responder=responder)
        database = await Database.connect(database_url, PoolOptions(min_size=1, max_size=5))
        try:
            async with (
                serve(app) as service_url,
                httpx.AsyncClient(base_url=emulator_url, timeout=30) as control,
                httpx.AsyncClient(base_url=service_url, timeout=30) as service,
            ):
                flow = LocalFlow(
                    service_url=service_url,
                    emulator_url=emulator_url,
                    emulator_app=emulator_app,
                    control=control,
                    service=service,
                    stores=Stores.on(database),
                    seeder=DirectorySeeder(database),
                    settings=settings,
                )
                await flow.configure_emulator(webhook_url=f"{service_url}/api/whatsapp/webhook")
                yield flow
                await emulator_app.emulator.webhooks.cancel_all()
        finally:
            await database.aclose()


# --- Helpers for send API tests (`/api/whatsapp/send/*` and the inbox views) ---------------
# (Imports here, not at the top: this section is appended to a file others edit too.)
from app.repositories.models import Company, Profile  # noqa: E402
from support.jwt_tokens import hs256, user_claims  # noqa: E402
from support.store_data import unique_phone  # noqa: E402

SEND_API = "/api/whatsapp/send"
GRAPH_VERSION = "v24.0"


def bearer(user_id: Any, **claims: Any) -> dict[str, str]:
    """`Authorization` for a signed-in user of this flow (HS256 with the flow's JWT secret)."""
    token = hs256(user_claims(sub=str(user_id), **claims), JWT_SECRET)
    return {"Authorization": f"Bearer {token}"}


async def add_member(seeder: DirectorySeeder, company: Company) -> Profile:
    """One more user (with a fresh phone number) of an existing company."""
    profile = await seeder.create_profile(phone=unique_phone(), full_name="María Soto")
    await seeder.create_session(user_id=profile.id, company_id=company.id)
    return profile


async def open_window(flow: LocalFlow, phone: str, text: str = "Hola") -> str:
    """The user writes and gets the automatic reply: the 24-hour window is open and the
    conversation is stored. Returns Kapso's conversation id."""
    sent = await flow.say(phone, text)
    replies = await flow.outbox(phone, wait_count=1)
    assert len(replies) == 1, replies
    # The worker stores its reply after Kapso took it: wait, or a test's own send could be
    # stored first and the reply appended after it.
    await eventually(
        lambda: flow.stores.conversations.find_message_by_wamid(replies[0]["message_id"])
    )
    conversation_id: str = sent["conversation_id"]
    return conversation_id


async def api_sends(
    flow: LocalFlow, phone: str, *, expected: int, wait_seconds: float = 10.0
) -> list[dict[str, Any]]:
    """What the emulator received for `phone` after `open_window`'s automatic reply: waits
    for `expected` entries (and no longer), and returns all there are by then."""
    entries = await flow.outbox(phone, wait_count=expected + 1, wait_seconds=wait_seconds)
    return entries[1:]


async def create_template(
    flow: LocalFlow,
    name: str,
    body_text: str,
    *,
    language: str = "es",
    parameter_format: str = "POSITIONAL",
) -> None:
    """An approved template, created through the emulator's Meta-proxy template API."""
    response = await flow.control.post(
        f"/meta/whatsapp/{GRAPH_VERSION}/{WABA_ID}/message_templates",
        headers={"X-API-Key": API_KEY},
        json={
            "name": name,
            "language": language,
            "category": "UTILITY",
            "parameter_format": parameter_format,
            "components": [{"type": "BODY", "text": body_text}],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "APPROVED", response.text


def assert_error(
    response: httpx.Response, status: int, code: str, *, field: str | None = None
) -> dict[str, str]:
    """The response is `status` with the one error shape `{"error": {"code", "message",
    "field"?}}`, this `code` and (when given) this `field`; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, str] = body["error"]
    assert set(error) <= {"code", "message", "field"}, error
    assert {"code", "message"} <= set(error), error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


# --- Helpers for webhook endpoint and inbound scenario tests ---------------------------------
# (Imports here, not at the top: this section is appended to a file others edit too.)
import asyncio  # noqa: E402
import inspect  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402

from app.repositories.models import InboxEvent, InboxState  # noqa: E402

KAPSO_WEBHOOK_FIXTURES = (
    Path(__file__).resolve().parent.parent / "integrations/kapso/fixtures/kapso-webhooks"
)


async def eventually(
    check: Callable[[], Any], *, within: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy without failing an
    assertion; returns that value. Raises the last AssertionError (or one) on timeout."""
    deadline = time.monotonic() + within
    while True:
        failure: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as exc:
            failure = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            if failure is not None:
                raise failure
            raise AssertionError(f"condition not met within {within} s (last value {result!r})")
        await asyncio.sleep(interval)


def kapso_fixture(relative: str) -> dict[str, Any]:
    """A Kapso webhook body from tests/integrations/kapso/fixtures/kapso-webhooks/."""
    data: dict[str, Any] = json.loads((KAPSO_WEBHOOK_FIXTURES / relative).read_text("utf-8"))
    return data


def text_message_item(
    phone: str,
    *,
    text: str = "Hola",
    wamid: str | None = None,
    conversation_id: str | None = None,
    contact_name: str = "Ana Pérez",
) -> dict[str, Any]:
    """The v2 `message.received` text fixture, for this sender, with fresh (or given) ids."""
    body = kapso_fixture("v2/message.received.text.json")
    digits_only = "".join(ch for ch in phone if ch.isdigit())
    message = body["message"]
    message["id"] = wamid or f"wamid.e2e{uuid.uuid4().hex}"
    message["from"] = digits_only
    message["timestamp"] = str(int(time.time()))
    message["text"]["body"] = text
    message["kapso"]["content"] = text
    conversation = body["conversation"]
    conversation["id"] = conversation_id or str(uuid.uuid4())
    conversation["phone_number"] = f"+{digits_only}"
    conversation["kapso"]["contact_name"] = contact_name
    return body


async def find_inbox_events(
    inbox: InboxStore,
    *,
    wamid: str | None = None,
    key_prefix: str | None = None,
    event: str | None = None,
    scan: int = 200,
) -> list[InboxEvent]:
    """Recently recorded inbox events (the newest `scan` of each state) that match."""
    found: dict[Any, InboxEvent] = {}
    for state in InboxState:
        for row in await inbox.list_inbox_events(state, limit=scan):
            if (
                (wamid is None or row.wamid == wamid)
                and (key_prefix is None or row.idempotency_key.startswith(key_prefix))
                and (event is None or row.event == event)
            ):
                found[row.id] = row
    return sorted(found.values(), key=lambda row: row.seq)


async def wait_inbox_done(
    inbox: InboxStore,
    *,
    count: int = 1,
    within: float = 15.0,
    **match: Any,
) -> list[InboxEvent]:
    """Wait until `count` matching inbox events exist and all are done; returns them."""

    async def done() -> list[InboxEvent] | None:
        rows = await find_inbox_events(inbox, **match)
        assert len(rows) <= count, f"expected {count} events, found {len(rows)}: {rows}"
        if len(rows) == count and all(row.state is InboxState.DONE for row in rows):
            return rows
        return None

    rows: list[InboxEvent] = await eventually(done, within=within)
    return rows


# --- Helpers for reliability tests: worker processes, tokens, store outages ----------------
# (Imports here, not at the top: this section is appended to a file others edit too.)
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from enum import Enum  # noqa: E402
from urllib.parse import parse_qs, urlsplit, urlunsplit  # noqa: E402

import jwt  # noqa: E402

BACKEND_DIR = Path(__file__).resolve().parents[2] / "backend"


def service_role_token(secret: str = JWT_SECRET) -> str:
    """A service_role key as Supabase mints it (HS256 with the project's JWT secret)."""
    now = int(time.time())
    claims = {"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


def user_token(user_id: uuid.UUID | None = None, secret: str = JWT_SECRET) -> str:
    """A signed-in user's access token (valid, but not the service_role)."""
    now = int(time.time())
    claims = {
        "sub": str(user_id or uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """Environment variables that make `Settings()` in another process equal `settings`
    (plus `overrides`); no setting is inherited from this process's environment."""
    names = set(Settings.model_fields)
    env = {key: value for key, value in os.environ.items() if key.lower() not in names}
    values = {**settings.model_dump(), **overrides}
    for name, value in values.items():
        if value is not None:
            env[name.upper()] = _env_value(value)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BACKEND_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without cached bytecode every process a test starts compiles every module again
        # (seconds on a small machine, more while the test keeps it busy): cache it, out of
        # the source tree.
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "fizko-pycache"))
    return env


@dataclass
class WorkerProcess:
    """A `whatsapp-worker` process (`python -m app.worker`), its output in `log_path`."""

    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    async def started(self, within: float = 60.0) -> None:
        """Wait until its inbox worker runs (it logs so once its database is open)."""

        def running() -> bool:
            assert self.process.returncode is None, self.log()
            return "Inbox worker" in self.log()

        await eventually(running, within=within, interval=0.1)

    async def kill(self) -> None:
        """SIGKILL: no clean-up, no lease released, nothing settled."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self, grace_seconds: float = 20.0) -> int:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), grace_seconds)
        except TimeoutError:
            await self.kill()
            raise


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, workdir: Path, *, name: str = "worker", **overrides: Any
) -> AsyncIterator[WorkerProcess]:
    """Run `python -m app.worker` configured like `settings` (plus `overrides`) by environment
    variables, in the existing directory `workdir` (so no developer `.env` is read); killed
    on exit if still running."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.worker",
            cwd=workdir,
            env=settings_env(settings, **overrides),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)
    try:
        yield worker
    finally:
        if process.returncode is None:
            await worker.kill()


class TcpProxy:
    """A TCP forwarder to a PostgreSQL server that a test can cut (live connections dropped, new
    ones closed at once) and restore: an outage of a shared server without touching it."""

    def __init__(self, target_dsn: str) -> None:
        parts = urlsplit(target_dsn)
        query = parse_qs(parts.query)
        self._dsn = parts
        socket_dir = query.get("host", [""])[0]
        if socket_dir.startswith("/"):
            # The embedded server listens on a Unix socket only: `.s.PGSQL.<port>` in that dir.
            port = query.get("port", ["5432"])[0]
            self._unix_path: str | None = f"{socket_dir}/.s.PGSQL.{port}"
            self._target: tuple[str, int] | None = None
        else:
            assert parts.hostname is not None, target_dsn
            self._unix_path = None
            self._target = (parts.hostname, parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.down = False

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; returns the target DSN rewritten to it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = ""
        if self._dsn.username:
            password = f":{self._dsn.password}" if self._dsn.password else ""
            user = f"{self._dsn.username}{password}@"
        return urlunsplit(self._dsn._replace(netloc=f"{user}127.0.0.1:{port}", query=""))

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._unix_path is not None:
            return await asyncio.open_unix_connection(self._unix_path)
        assert self._target is not None
        return await asyncio.open_connection(*self._target)

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.down = False

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await self._connect_upstream()
        except OSError:
            writer.transport.abort()
            return
        for pipe in (
            self._pipe(reader, upstream_writer, writer),
            self._pipe(upstream_reader, writer, upstream_writer),
        ):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
    ) -> None:
        self._writers.update((writer, other))
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            other.transport.abort()


# --- Quiescence before a flow stops (webhook endpoint and inbound scenario tests) ------------
from datetime import UTC, datetime, timedelta  # noqa: E402


async def quiesce(flow: LocalFlow, *, since: datetime, within: float = 10.0) -> None:
    """Let the flow finish its work before it stops: every webhook delivered and every inbox
    event received since `since` processed. Best effort: gives up quietly after `within`.

    Stopping while the worker still has work races its shutdown (events claimed while it stops
    run against closed clients), which shows up as unclosed-socket warnings in later tests.
    """
    await flow.control.post("/_emulator/deliveries/drain", json={"wait_seconds": within})
    deadline = time.monotonic() + within
    cutoff = since - timedelta(seconds=1)
    while time.monotonic() < deadline:
        busy = [
            event
            for state in (InboxState.PENDING, InboxState.PROCESSING)
            for event in await flow.stores.inbox.list_inbox_events(state, limit=100)
            if event.received_at >= cutoff
            and (event.state is InboxState.PROCESSING or event.next_attempt_at <= datetime.now(UTC))
        ]
        if not busy:
            return
        await asyncio.sleep(0.05)
