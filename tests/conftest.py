"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.supabase_stack import SupabaseStack, local_supabase_stack


@pytest.fixture(scope="session")
def supabase_stack() -> Iterator[SupabaseStack]:
    """The real local Supabase (PostgreSQL + PostgREST + gateway), up once per session.

    Fails the session when the stack cannot start: Supabase tests are never skipped.
    """
    with local_supabase_stack() as stack:
        yield stack
