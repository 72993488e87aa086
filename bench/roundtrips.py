"""Store round trips per inbound text from a known user on a known conversation — counted.

The service runs in this process on the real store, its repository wrapped in a counter that
implements the same Protocol by delegation; underneath, every SQL statement SQLite executes
(aiosqlite's trace callback) or every HTTP request to PostgREST (an httpx event hook) is
counted and attributed to the repository call that caused it. Kapso is the emulator.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from pydantic import SecretStr

from app.container import build_container
from app.core.settings import Settings
from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from app.repositories.whatsapp import WhatsAppRepository
from bench.common import JWT_SECRET, KAPSO_API_KEY, PHONE_NUMBER_ID, WABA_ID, WEBHOOK_SECRET
from bench.store import StoreRef, seed_users


@dataclass
class Call:
    method: str
    low_level: int  # SQL statements (SQLite) or HTTP requests (PostgREST)
    empty: bool  # a claim that found nothing: the worker's idle poll, not this message's cost


@dataclass
class CountingRepository:
    """Delegates every repository call to `inner` and records it (with what it cost below)."""

    inner: WhatsAppRepository
    calls: list[Call] = field(default_factory=list)
    low_level: int = 0
    kapso_requests: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        function = cast(Callable[..., Awaitable[Any]], attribute)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            before = self.low_level
            result = await function(*args, **kwargs)
            empty = name == "claim_inbox_events" and not result
            self.calls.append(Call(name, self.low_level - before, empty))
            return result

        return counted

    def take(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return calls

    async def instrument(self) -> str:
        """Hook the low-level counter into the inner store; returns what it counts."""
        if isinstance(self.inner, SqliteWhatsAppRepository):
            connection = await self.inner._connect()

            def trace(statement: str) -> None:
                if not statement.startswith("--"):  # trigger bodies are reported as comments
                    self.low_level += 1

            await connection.set_trace_callback(trace)
            return "sql_statements"
        if isinstance(self.inner, SupabaseWhatsAppRepository):
            http = self.inner._http
            assert http is not None

            async def hook(request: httpx.Request) -> None:
                self.low_level += 1

            http.event_hooks["request"].append(hook)
            return "postgrest_http_requests"
        raise TypeError(f"unknown store {type(self.inner).__name__}")


def summarise(calls: list[Call]) -> dict[str, Any]:
    counted = [call for call in calls if not call.empty]
    return {
        "repository_calls": len(counted),
        "low_level": sum(call.low_level for call in counted),
        "by_method": dict(Counter(call.method for call in counted)),
        "sequence": [f"{call.method} ({call.low_level})" for call in counted],
    }


def bench_settings(store: StoreRef, emulator_url: str, run_dir: Path) -> Settings:
    values: dict[str, Any] = {
        "kapso_api_key": SecretStr(KAPSO_API_KEY),
        "kapso_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "kapso_base_url": emulator_url,
        "kapso_phone_number_id": PHONE_NUMBER_ID,
        "kapso_waba_id": WABA_ID,
        "supabase_jwt_secret": SecretStr(JWT_SECRET),
        "worker_enabled": False,
        "log_level": "WARNING",
    }
    if store.kind == "supabase":
        assert store.supabase is not None
        values.update(
            store_backend="supabase",
            supabase_url=store.supabase["SUPABASE_URL"],
            supabase_service_role_key=SecretStr(store.supabase["SUPABASE_SERVICE_ROLE_KEY"]),
        )
    else:
        values.update(store_backend="sqlite", sqlite_path=str(store.sqlite_path))
    return Settings(_env_file=None, **values)


async def _deliveries(control: httpx.AsyncClient, after_seq: int) -> list[dict[str, Any]]:
    response = await control.get("/_emulator/deliveries")
    response.raise_for_status()
    found: list[dict[str, Any]] = [d for d in response.json()["data"] if d["seq"] > after_seq]
    return found


async def count_round_trips(store: StoreRef, emulator_url: str, run_dir: Path) -> dict[str, Any]:
    """Count one inbound text's store round trips (ingest + processing + its status events)."""
    inner = await store.open()
    counting = CountingRepository(inner)
    tag = uuid.uuid4().hex[:6]
    try:
        (user,) = await seed_users(inner, 1, tag=tag)
        settings = bench_settings(store, emulator_url, run_dir)
        repository = cast(WhatsAppRepository, counting)
        async with (
            build_container(settings, repository=repository) as container,
            httpx.AsyncClient(base_url=emulator_url, timeout=30) as control,
        ):
            unit = await counting.instrument()
            seen = 0

            async def one_message(text: str) -> dict[str, list[Call]]:
                nonlocal seen
                response = await control.post(
                    "/_emulator/inbound", json={"phone": user.sender.phone, "text": text}
                )
                response.raise_for_status()
                (delivery,) = [
                    d
                    for d in await _deliveries(control, seen)
                    if d["event"] == "whatsapp.message.received"
                ]
                seen = delivery["seq"]
                counting.take()
                await container.ingest.ingest(delivery["body"].encode(), delivery["headers"])
                ingest = counting.take()
                await container.worker.drain()
                processing = counting.take()
                # Kapso reports the reply as sent (at once), delivered (1 s) and read (3 s).
                await asyncio.sleep(3.5)
                statuses: list[Call] = []
                for status in await _deliveries(control, seen):
                    seen = max(seen, status["seq"])
                    if status["event"] == "whatsapp.message.received":
                        continue
                    await container.ingest.ingest(status["body"].encode(), status["headers"])
                    await container.worker.drain()
                    statuses.extend(counting.take())
                return {"ingest": ingest, "processing": processing, "statuses": statuses}

            await one_message("Hola")  # new conversation: identity resolved and cached
            known = await one_message("¿Cuánto IVA debo pagar?")  # known user and conversation
            kapso_calls = await control.get("/_emulator/outbox", params={"to": user.sender.phone})
            kapso_kinds = Counter(entry["kind"] for entry in kapso_calls.json()["data"])
        ingest = summarise(known["ingest"])
        processing = summarise(known["processing"])
        statuses = summarise(known["statuses"])
        return {
            "store": store.kind,
            "low_level_unit": unit,
            "ingest": ingest,
            "processing": processing,
            "per_inbound_message": ingest["repository_calls"] + processing["repository_calls"],
            "per_inbound_message_low_level": ingest["low_level"] + processing["low_level"],
            "status_events_for_the_reply": statuses,
            "kapso_calls_for_two_messages": dict(kapso_kinds),
        }
    finally:
        await inner.aclose()


def main() -> None:  # pragma: no cover - a manual entry point
    import sys

    result = asyncio.run(
        count_round_trips(
            StoreRef("sqlite", sqlite_path=Path(sys.argv[2])), sys.argv[1], Path(sys.argv[2]).parent
        )
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
