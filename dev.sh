#!/usr/bin/env bash
# Runs the whole local flow, setting itself up on a fresh machine:
#   - the database: DATABASE_URL when set, else the embedded PostgreSQL (EMBEDDED_POSTGRES_DIR),
#     started once and kept up for the whole session;
#   - the API on port 8089 (auto-reload) with the inbox worker inside it;
#   - when no KAPSO_API_KEY is configured, the Kapso emulator on port 8091, wired both ways,
#     and a demo user (+56912345678, company "Demo SpA") in the database.
# Ctrl-C stops all of it (the embedded PostgreSQL too, unless another process still uses it).
set -euo pipefail
cd "$(dirname "$0")"

export UV_PYTHON_DOWNLOADS=never
PORT="${PORT:-8089}"
EMULATOR_PORT="${KAPSO_EMULATOR_PORT:-8091}"

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
mkdir -p .local

# The value of a setting from the environment, else from .env (empty when unset).
setting() {
  local name="$1"
  if [ -n "${!name:-}" ]; then printf '%s' "${!name}"; return; fi
  sed -n "s/^${name}=//p" .env | tail -n 1
}

api_pid=""
emulator_pid=""
database_pid=""
# Stop what we started: the API and the emulator first, then the database they used.
cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "$api_pid" "$emulator_pid"; do
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "$api_pid" "$emulator_pid"; do
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  done
  if [ -n "$database_pid" ]; then
    kill -TERM "$database_pid" 2>/dev/null || true
    wait "$database_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

database_url="$(setting DATABASE_URL)"
if [ -n "$database_url" ]; then
  # Only the host: the URL may carry a password.
  database_host="$(printf '%s' "$database_url" | sed -E 's#^[^:]+://([^@/]*@)?([^/?]*).*#\2#')"
  echo "==> Database: DATABASE_URL (${database_host:-local socket})"
else
  # The API (restarted by --reload) and the seed each use the embedded PostgreSQL for a while;
  # this holder keeps it running in between, so it starts once and stops when we do.
  database_dir="$(setting EMBEDDED_POSTGRES_DIR)"
  database_dir="${database_dir:-.local/postgres}"
  echo "==> Database: the embedded PostgreSQL in ${database_dir}"
  database_out=".local/dev-database.out"
  : >"$database_out"
  uv run --no-sync python -m app.db.embedded hold --dir "$database_dir" >"$database_out" &
  database_pid=$!
  until [ -s "$database_out" ]; do
    if ! kill -0 "$database_pid" 2>/dev/null; then
      database_pid=""
      echo "==> the embedded PostgreSQL did not start (see above)" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "    $(head -n 1 "$database_out")"
fi

if [ -z "$(setting KAPSO_API_KEY)" ]; then
  # No real Kapso configured: play it locally.
  export KAPSO_API_KEY="local-emulator-key"
  export KAPSO_BASE_URL="http://127.0.0.1:${EMULATOR_PORT}"
  export KAPSO_LEGACY_BASE_URL="$KAPSO_BASE_URL"
  export KAPSO_WEBHOOK_SECRET="$(setting KAPSO_WEBHOOK_SECRET)"
  export KAPSO_WEBHOOK_SECRET="${KAPSO_WEBHOOK_SECRET:-local-emulator-webhook-secret}"
  export KAPSO_PHONE_NUMBER_ID="$(setting KAPSO_PHONE_NUMBER_ID)"
  export KAPSO_PHONE_NUMBER_ID="${KAPSO_PHONE_NUMBER_ID:-1029384756}"
  export KAPSO_WABA_ID="$(setting KAPSO_WABA_ID)"
  export KAPSO_WABA_ID="${KAPSO_WABA_ID:-102290129340398}"
  echo "==> No KAPSO_API_KEY: starting the Kapso emulator on http://127.0.0.1:${EMULATOR_PORT}"
  uv run --no-sync kapso-emulator --port "$EMULATOR_PORT" \
    --webhook-url "http://127.0.0.1:${PORT}/api/whatsapp/webhook" \
    --webhook-secret "$KAPSO_WEBHOOK_SECRET" \
    --phone-number-id "$KAPSO_PHONE_NUMBER_ID" --waba-id "$KAPSO_WABA_ID" \
    --state-file .local/kapso-emulator.json &
  emulator_pid=$!
  uv run --no-sync python -m app.dev_seed
  echo
  echo "==> Try it: open http://127.0.0.1:${EMULATOR_PORT}/ and write as +56912345678, or run"
  echo "    uv run kapso-emulator say +56912345678 \"Hola\""
  echo
fi

echo "==> Fizko WhatsApp API on http://127.0.0.1:${PORT} (docs at /docs)"
# In the background, so that a signal to this script runs the clean-up at once (bash runs traps
# only between commands, never while it waits for one in the foreground).
uv run --no-sync uvicorn app.main:create_app --factory \
  --app-dir backend --host 127.0.0.1 --port "$PORT" --reload --reload-dir backend &
api_pid=$!
wait "$api_pid"
