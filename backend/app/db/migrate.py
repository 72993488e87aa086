"""`python -m app.db.migrate`: apply the pending migrations to a database, then exit.

For databases no service process migrates at start: the local Supabase stack
(scripts/local-supabase.sh) and any other non-production one. Hosted Supabase takes the same
files with `supabase db push`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from app.db.migrations import MigrationError, apply_migrations
from app.db.pool import Database, PoolOptions
from app.repositories.errors import StoreError

# A baseline on a fresh database takes well under a second; the store's 5 s default is for
# requests, not for schema changes behind another process's advisory lock.
_TIMEOUT_SECONDS = 300.0


async def migrate(dsn: str) -> list[str]:
    """Apply every pending migration to `dsn`; returns the labels of those applied."""
    database = await Database.connect(
        dsn, PoolOptions(min_size=1, max_size=1, timeout_seconds=_TIMEOUT_SECONDS)
    )
    try:
        return [migration.label for migration in await apply_migrations(database)]
    finally:
        await database.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.db.migrate",
        description="Apply backend/supabase/migrations (and, on a plain PostgreSQL, the local "
        "bootstrap) to a database.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="the database's DSN (default: DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    try:
        applied = asyncio.run(migrate(args.database_url))
    except (StoreError, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for label in applied:
        print(f"applied {label}", file=sys.stderr)
    if not applied:
        print("no pending migrations", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
