"""The migration runner (app.db.migrations) on real databases: applying, checking, racing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic import SecretStr

from app.core.settings import Environment, Settings
from app.db.connect import open_database
from app.db.migrations import (
    LOCAL_BOOTSTRAP,
    MIGRATIONS_DIR,
    MigrationError,
    apply_migrations,
    available_migrations,
    pending_migrations,
    require_migrations,
)
from app.db.pool import Database, PoolOptions
from support.database import PostgresCluster, with_database

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def empty_database(postgres: PostgresCluster) -> AsyncIterator[str]:
    """A brand-new database with nothing of ours in it (not from the migrated template)."""
    name = f"empty_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'create database "{name}" template template0')
    finally:
        await admin.close()
    try:
        yield with_database(postgres.dsn, name)
    finally:
        admin = await asyncpg.connect(postgres.dsn)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(dsn, PoolOptions(min_size=1, max_size=2))
    try:
        yield database
    finally:
        await database.aclose()


def production(dsn: str, *, migrate_on_start: bool | None) -> Settings:
    # _env_file=None: the developer's .env must not decide what the test sees.
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment=Environment.PRODUCTION,
        database_url=SecretStr(dsn),
        migrate_on_start=migrate_on_start,
        kapso_api_key=SecretStr("kapso-key"),
        kapso_webhook_secret=SecretStr("whsec"),
        kapso_phone_number_id="pn-1",
        supabase_url="https://project-ref.supabase.test",
        supabase_jwt_secret=SecretStr("a-jwt-secret-with-at-least-32-characters"),
    )


async def recorded(database: Database) -> list[asyncpg.Record]:
    return await database.fetch(
        "select version, statements, name from supabase_migrations.schema_migrations"
        " order by version"
    )


def test_the_files_are_named_as_supabase_cli_names_them() -> None:
    migrations = available_migrations()
    assert [m.label for m in migrations] == [p.stem for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]
    assert migrations[0].label == "20251201000000_baseline"
    assert all(len(m.version) == 14 and m.version.isdigit() for m in migrations)


def test_bootstrap_is_kept_out_of_the_real_migrations() -> None:
    """Hosted Supabase has its own roles and auth schema: the migrations must not make them."""
    for migration in MIGRATIONS_DIR.glob("*.sql"):
        text = migration.read_text()
        assert "create role" not in text.lower(), migration.name
        assert "auth.users" not in text.split("--")[0]
    assert LOCAL_BOOTSTRAP.is_file()


async def test_applying_on_an_empty_database_then_again_is_a_no_op(
    postgres: PostgresCluster,
) -> None:
    async with empty_database(postgres) as dsn, connected(dsn) as database:
        assert [m.label for m in await pending_migrations(database)] == [
            m.label for m in available_migrations()
        ]
        applied = await apply_migrations(database)
        assert [m.label for m in applied] == [m.label for m in available_migrations()]
        rows = await recorded(database)
        assert await apply_migrations(database) == []
        assert await recorded(database) == rows
        assert await pending_migrations(database) == []
        await require_migrations(database)


async def test_a_migrated_database_has_nothing_to_apply(database: Database) -> None:
    assert await apply_migrations(database) == []
    assert [row["version"] for row in await recorded(database)] == [
        m.version for m in available_migrations()
    ]


async def test_the_migrations_are_safe_to_run_again_by_hand(database: Database) -> None:
    """Every statement is "if not exists"/"or replace": a database that has it all is fine
    (hosted Fizko has some of these tables already)."""
    for migration in available_migrations():
        async with database.transaction() as tx:
            await tx.execute(migration.path.read_text(encoding="utf-8"))
    await require_migrations(database)


async def test_concurrent_starts_on_a_new_database_apply_the_baseline_once(
    postgres: PostgresCluster,
) -> None:
    async with empty_database(postgres) as dsn:
        async with contextlib.AsyncExitStack() as stack:
            databases = [await stack.enter_async_context(connected(dsn)) for _ in range(4)]
            results = await asyncio.gather(*(apply_migrations(db) for db in databases))
        # One applied everything; the others waited for it and found nothing left.
        labels = sorted([m.label for m in result] for result in results)
        assert labels == [[], [], [], [m.label for m in available_migrations()]]

        async with connected(dsn) as database:
            rows = await recorded(database)
            assert [(row["version"], row["name"]) for row in rows] == [
                (m.version, m.name) for m in available_migrations()
            ]
            baseline = available_migrations()[0]
            assert rows[0]["statements"] == [baseline.path.read_text(encoding="utf-8")]
            columns = await database.fetch(
                """select column_name, data_type from information_schema.columns
                    where table_schema = 'supabase_migrations'
                      and table_name = 'schema_migrations'
                    order by ordinal_position"""
            )
            assert [(c["column_name"], c["data_type"]) for c in columns] == [
                ("version", "text"),
                ("statements", "ARRAY"),
                ("name", "text"),
            ]


async def test_require_migrations_names_what_is_missing(postgres: PostgresCluster) -> None:
    async with empty_database(postgres) as dsn, connected(dsn) as database:
        with pytest.raises(MigrationError, match="20251201000000_baseline"):
            await require_migrations(database)


async def test_production_refuses_to_start_on_an_unmigrated_database(
    postgres: PostgresCluster,
) -> None:
    async with empty_database(postgres) as dsn:
        with pytest.raises(MigrationError, match="20251201000000_baseline"):
            async with open_database(production(dsn, migrate_on_start=None)):
                pytest.fail("started on a database without the schema")
        # Nothing was applied behind its back.
        async with connected(dsn) as database:
            assert len(await pending_migrations(database)) == len(available_migrations())

        async with open_database(production(dsn, migrate_on_start=True)) as database:
            assert await pending_migrations(database) == []
            row = await database.fetchrow("select to_regclass('public.whatsapp_inbox_events')")
            assert row is not None
            assert row[0] is not None

        # Migrated: production starts without applying anything.
        async with open_database(production(dsn, migrate_on_start=None)) as database:
            await require_migrations(database)


async def test_development_applies_what_is_missing_at_start(postgres: PostgresCluster) -> None:
    async with empty_database(postgres) as dsn:
        settings = Settings(_env_file=None, database_url=SecretStr(dsn))  # type: ignore[call-arg]
        async with open_database(settings) as database:
            assert await pending_migrations(database) == []


async def test_every_public_table_has_row_level_security(database: Database) -> None:
    rows = await database.fetch(
        """select c.relname, c.relrowsecurity from pg_class c
             join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind in ('r', 'p')
            order by c.relname"""
    )
    tables = {row["relname"]: row["relrowsecurity"] for row in rows}
    assert {
        "profiles",
        "companies",
        "sessions",
        "conversations",
        "messages",
        "whatsapp_inbox_events",
        "whatsapp_inbox_queues",
        "whatsapp_outbound_messages",
    } <= set(tables)
    assert [name for name, secured in tables.items() if not secured] == []


async def test_users_have_no_privileges_on_the_inbox(database: Database) -> None:
    for role in ("anon", "authenticated"):
        for table in ("whatsapp_inbox_events", "whatsapp_inbox_queues"):
            row = await database.fetchrow(
                "select has_table_privilege($1, $2, 'select')", role, f"public.{table}"
            )
            assert row is not None
            assert row[0] is False, (role, table)
        row = await database.fetchrow(
            "select has_function_privilege($1, $2, 'execute')",
            role,
            "public.whatsapp_inbox_claim(text, integer, double precision, integer)",
        )
        assert row is not None
        assert row[0] is False, role
