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
echo "==> pytest"
uv run --no-sync pytest "$@"
