"""The benchmark's view of the store: seeding known users, and counting what a run left."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.repositories.sqlite_repository import SqliteWhatsAppRepository
from app.repositories.supabase_repository import SupabaseWhatsAppRepository
from app.repositories.whatsapp import WhatsAppRepository
from bench.payloads import Sender


@dataclass(frozen=True)
class StoreRef:
    """Which store a run used: an SQLite file or a local Supabase stack."""

    kind: str  # "sqlite" | "supabase"
    sqlite_path: Path | None = None
    supabase: Mapping[str, str] | None = None

    async def open(self) -> WhatsAppRepository:
        if self.kind == "supabase":
            assert self.supabase is not None
            return await SupabaseWhatsAppRepository.connect(
                self.supabase["SUPABASE_URL"], self.supabase["SUPABASE_SERVICE_ROLE_KEY"]
            )
        assert self.sqlite_path is not None
        return SqliteWhatsAppRepository(self.sqlite_path)

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of a read-only SQL query, straight from the database (not the service)."""
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            connection = sqlite3.connect(self.sqlite_path, timeout=30)
            try:
                return list(connection.execute(sql).fetchall())
            finally:
                connection.close()
        assert self.supabase is not None
        wrapped = f"select coalesce(json_agg(row_to_json(q)), '[]') from ({sql}) q"  # noqa: S608
        output = subprocess.run(  # noqa: S603 - our own query
            ["psql", "-X", "-q", "-At", self.supabase["DATABASE_URL"], "-c", wrapped],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        return [tuple(row.values()) for row in json.loads(output)]

    def inbox_states(self, wamid_prefix: str | None = None) -> dict[str, int]:
        where = f"where wamid like '{wamid_prefix}%'" if wamid_prefix else ""
        rows = self.query(
            f"select state, count(*) from whatsapp_inbox_events {where} group by state"  # noqa: S608
        )
        return {str(state): int(str(count)) for state, count in rows}

    def count(self, sql: str) -> int:
        rows = self.query(sql)
        return int(str(rows[0][0])) if rows else 0


@dataclass(frozen=True)
class KnownUser:
    sender: Sender
    user_id: uuid.UUID
    company_id: uuid.UUID


async def seed_users(repository: WhatsAppRepository, count: int, *, tag: str) -> list[KnownUser]:
    """`count` Fizko users, each with an active company and their own Kapso conversation id."""
    users = []
    prefix = 10_000 + (int(tag, 16) % 80_000) if tag else 10_000
    for index in range(count):
        phone = f"+569{prefix:05d}{index:03d}"
        profile = await repository.create_profile(phone=phone, full_name=f"Usuaria {index}")
        company = await repository.create_company(business_name=f"Bench {tag} {index} SpA")
        await repository.create_session(user_id=profile.id, company_id=company.id)
        users.append(
            KnownUser(
                Sender(phone, f"bench-{tag}-{index}", name=f"Usuaria {index}"),
                profile.id,
                company.id,
            )
        )
    return users
