#!/usr/bin/env bash
# THE benchmark command (issue 11): installs what it needs, runs every measurement, writes
# bench/results/<YYYY-MM-DD>.json and prints a table. See bench/README.md.
#
#   ./scripts/bench.sh                    the full run (about 25 minutes; the committed results)
#   ./scripts/bench.sh --quick            short durations and small runs (a few minutes)
#   ./scripts/bench.sh --only ingest      a subset: roundtrips,ingest,supabase,e2e,capacity,
#                                         drain,send,memory,driver
#   ./scripts/bench.sh --only drain --merge   re-run one part, keep the others in today's file
#   ./scripts/bench.sh --help             every option
#
# It starts (and stops) everything it uses: the servers on free ports, the run's own embedded
# PostgreSQL (app.db.embedded, in a temporary state directory, deleted at the end) and, for
# `supabase`, a private local Supabase stack (scripts/local-supabase.sh, its own directory and
# ports) — never the test suite's or yours. py-spy (the profile) is a dev dependency.
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

if ! command -v uv >/dev/null 2>&1; then
  echo "==> uv not found; installing it from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi

echo "==> uv sync (locked)"
uv sync --locked --quiet

# bench.run stops every process it started when it ends, Ctrl-C and SIGTERM included.
exec uv run --no-sync python -m bench.run "$@"
