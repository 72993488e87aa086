"""The schema's migrations (backend/supabase/migrations), applied or checked at start.

The files are the only schema and keep Supabase CLI's layout, so hosted Supabase can take them
with `supabase db push`; this runner records what it applies in the same table the CLI uses
(`supabase_migrations.schema_migrations`: version, statements, name), so either tool sees what
the other did. Applying is safe when several processes start at once: one transaction under an
advisory lock (transaction-scoped, so it also holds behind a transaction-mode pooler) applies
every pending file; the others wait, then find nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from app.db.pool import Connection, Database

logger = logging.getLogger(__name__)

SUPABASE_DIR = Path(__file__).resolve().parents[2] / "supabase"
MIGRATIONS_DIR = SUPABASE_DIR / "migrations"
# What hosted Supabase provides (roles, auth.uid()...), for a plain PostgreSQL only.
LOCAL_BOOTSTRAP = SUPABASE_DIR / "local" / "bootstrap.sql"

_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"fizko-whatsapp:migrations").digest()[:8], "big", signed=True
)

_TRACKING_TABLE = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


class MigrationError(RuntimeError):
    """The schema is not what this version of the service needs."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order, named `<version>_<name>.sql` as Supabase CLI does."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit() or not name:
            raise MigrationError(f"migration file not named <version>_<name>.sql: {path.name}")
        found.append(Migration(version, name, path))
    return found


async def applied_versions(connection: Connection) -> set[str]:
    exists = await connection.fetchval(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    )
    if not exists:
        return set()
    rows = await connection.fetch("select version from supabase_migrations.schema_migrations")
    return {str(row["version"]) for row in rows}


async def pending_migrations(database: Database) -> list[Migration]:
    """The migration files not yet recorded as applied in this database."""
    async with database.connection() as connection:
        applied = await applied_versions(connection)
    return [m for m in available_migrations() if m.version not in applied]


async def apply_migrations(database: Database) -> list[Migration]:
    """Apply every pending migration (and, on a plain PostgreSQL, the local bootstrap first)."""
    async with database.transaction() as connection:
        await connection.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
        if await connection.fetchval("select to_regprocedure('auth.uid()') is null"):
            # Not a Supabase database: create the roles and auth functions Supabase has.
            await connection.execute(LOCAL_BOOTSTRAP.read_text(encoding="utf-8"))
        await connection.execute(_TRACKING_TABLE)
        applied = await applied_versions(connection)
        done = []
        for migration in available_migrations():
            if migration.version in applied:
                continue
            sql = migration.path.read_text(encoding="utf-8")
            logger.info("Applying migration %s", migration.label)
            await connection.execute(sql)
            await connection.execute(
                """insert into supabase_migrations.schema_migrations (version, statements, name)
                   values ($1, $2, $3)""",
                migration.version,
                [sql],
                migration.name,
            )
            done.append(migration)
        if done:
            # A PostgREST in front of this database reloads its schema cache.
            await connection.execute("notify pgrst, 'reload schema'")
    return done


async def require_migrations(database: Database) -> None:
    """Refuse to run on a schema that lacks migrations this version needs, naming them."""
    missing = await pending_migrations(database)
    if missing:
        names = ", ".join(m.label for m in missing)
        raise MigrationError(
            f"the database lacks {len(missing)} migration(s): {names}. Apply them with "
            "`supabase db push` (or start once with MIGRATE_ON_START=true)."
        )
