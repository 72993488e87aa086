#!/usr/bin/env bash
# THE benchmark command (issue 7): installs what it needs, runs every measurement, writes
# bench/results/<YYYY-MM-DD>.json and prints a table. See bench/README.md.
#
#   ./scripts/bench.sh                    the full run (about 15 minutes; the committed results)
#   ./scripts/bench.sh --quick            short durations and a 5,000-delivery memory run (minutes)
#   ./scripts/bench.sh --only ingest      a subset: ingest,supabase,roundtrips,e2e,send,memory
#   ./scripts/bench.sh --deliveries 20000 the API memory run's size (default 100,000)
#   ./scripts/bench.sh --help             every option
#
# It starts (and stops) everything it uses: the servers on free ports, and a private local
# Supabase stack (its own data directory and ports, never the test suite's or yours).
# Benchmarks never fail on speed: the exit status is non-zero only when a measurement could not
# run or a count check (every accepted event processed exactly once) failed.
set -euo pipefail
cd "$(dirname "$0")/.."

export UV_PYTHON_DOWNLOADS=never

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v wrk >/dev/null 2>&1; then
  echo "==> wrk not found; installing it (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null ||
    { as_root apt-get update >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null; }
fi
for tool in psql curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    # local-supabase.sh installs PostgreSQL, nginx and PostgREST; the count checks use psql.
    echo "==> $tool not found; installing it (apt)"
    package=$([ "$tool" = psql ] && echo postgresql-client || echo curl)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package" >/dev/null
  fi
done

if ! command -v uv >/dev/null 2>&1; then
  echo "==> uv not found; installing it from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi

echo "==> uv sync (locked)"
uv sync --locked --quiet

# bench.run stops every process it started when it ends, Ctrl-C and SIGTERM included.
exec uv run --no-sync python -m bench.run "$@"
