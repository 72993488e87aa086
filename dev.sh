#!/usr/bin/env bash
# Runs the service locally on port 8089 with auto-reload, setting itself up on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

export UV_PYTHON_DOWNLOADS=never
PORT="${PORT:-8089}"

if ! command -v uv >/dev/null 2>&1; then
  echo "==> uv not found; installing it from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi

if [ ! -f .env ]; then
  cp .env.example .env
  echo "==> NOTICE: no .env found; created one from .env.example (development defaults)."
  echo "    Edit .env to point at a real Kapso project or Supabase."
fi

uv sync --quiet

echo "==> Fizko WhatsApp API on http://127.0.0.1:${PORT} (docs at /docs)"
exec uv run --no-sync uvicorn app.main:create_app --factory \
  --app-dir backend --host 127.0.0.1 --port "$PORT" --reload --reload-dir backend
