#!/usr/bin/env bash
# The gateway benchmark (issue 12): echo with acks through shoal's event proxy to a Node.js
# app, against a plain Node.js socket.io server doing the same work in its own handler, and
# the native references.
#
#   bash bench/gateway.sh            full run, ~3 min after the build; writes bench/report/gateway.{md,json}
#   bash bench/gateway.sh --smoke    a few seconds per server, exits 1 unless every ack came back
#
# Options: --rates 2000,5000,10000 (events/s in all; the first is the headline row, the others
# are steps until delivery or p99 breaks), --clients 1000, --duration 20 (s measured at the
# first rate), --step-duration 8, --warmup 3, --p99-limit-ms 250,
# --servers gateway,node,shoal-native,floor, --no-pin, --wait-quiet SECS (default 5: before
# each run wait up to SECS for the machine to be quiet), --out DIR (raw JSON; default
# bench/results/gateway-<stamp>).
#
# Servers (each restarted for every run):
#   gateway       the `shoal` binary (target/release/shoal) with `[[namespaces]] events` for
#                 `echo`, POSTing every event to servers/gateway-echo-app.mjs (node:http, checks
#                 the HMAC signature, answers {"ack": args}); CPU of both processes
#   node          servers/node/single.js: socket.io 4.8, `socket.on("echo", (p, ack) => ack(p))`
#   shoal-native  servers/shoal (bench-shoal --threads 2): the library with a Rust echo handler
#   floor         servers/floor: the cheapest program that serves the contract
#
# Pinning (when the machine has 2 cores or more and taskset exists): every server-side process
# (shoal and the app together, or the Node server) on core 0, the load generator on core 1. So
# each side has one core whatever the server's process count, and the gateway pays for the
# app's CPU out of the same core as the Node server does. --no-pin leaves it to the scheduler.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
MODE=full RATES=2000,5000,10000 CLIENTS=1000 DURATION=20 STEP_DURATION=8 WARMUP=3 P99_LIMIT=250
SERVERS=gateway,node,shoal-native,floor PIN=1 QUIET=5 OUT=""
SET_RATES="" SET_CLIENTS="" SET_DURATION="" SET_SERVERS=""
while (($#)); do
  case "$1" in
    --smoke) MODE=smoke ;;
    --rates) SET_RATES=$2; shift ;;
    --clients) SET_CLIENTS=$2; shift ;;
    --duration) SET_DURATION=$2; shift ;;
    --step-duration) STEP_DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --p99-limit-ms) P99_LIMIT=$2; shift ;;
    --servers) SET_SERVERS=$2; shift ;;
    --no-pin) PIN=0 ;;
    --wait-quiet) QUIET=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) sed -n '2,14p' "$0" >&2; exit 64 ;;
  esac
  shift
done
if [[ $MODE == smoke ]]; then
  # Proves that every part works (acks all back, signatures checked); no figure from here.
  RATES=500 CLIENTS=100 DURATION=2 WARMUP=1 QUIET=0 SERVERS=gateway,node,shoal-native
fi
RATES=${SET_RATES:-$RATES} CLIENTS=${SET_CLIENTS:-$CLIENTS} DURATION=${SET_DURATION:-$DURATION} SERVERS=${SET_SERVERS:-$SERVERS}

log() { printf '[gateway-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- install and build ----------------------------------------------------------------------
need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [[ ! -d "$BENCH/servers/node/node_modules/socket.io" || "$BENCH/servers/node/package-lock.json" -nt "$BENCH/servers/node/node_modules/.package-lock.json" ]]; then
  log "npm ci (Node peer)"
  (cd "$BENCH/servers/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
log "cargo build --release (shoal binary, load generator, native servers)"
(cd "$ROOT" && cargo build --release --quiet -p shoal-server --bin shoal)
(cd "$BENCH" && CARGO_TARGET_DIR="$BENCH/target" cargo build --release --quiet -p loadgen -p bench-shoal -p bench-floor)
SHOAL="$ROOT/target/release/shoal"
BIN="$BENCH/target/release"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
SUFFIX=""; [[ $MODE == smoke ]] && SUFFIX=" --smoke"
# The report goes to bench/report/ only from a full run with the default output.
REPORT="$BENCH/report"; [[ -n $OUT || $MODE == smoke ]] && REPORT=""
OUT="${OUT:-$BENCH/results/gateway-${SUFFIX:+smoke-}$STAMP}"
REPORT="${REPORT:-$OUT}"
mkdir -p "$OUT"

PIN_SERVER=() PIN_LOADGEN=() PINNING="none"
if ((PIN)) && (($(nproc) >= 2)) && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c 0) PIN_LOADGEN=(taskset -c 1) PINNING="server side on core 0 (taskset -c 0), load generator on core 1 (taskset -c 1)"
fi

# ---- servers ----------------------------------------------------------------------------------
SECRET="bench-secret-$RANDOM$RANDOM"
GROUPS_STARTED=() SERVER_PID="" PEER_PID=""

# Starts `cmd...` in its own process group (pinned), logging to $1; sets LAST_PID.
spawn() {
  local logf=$1; shift
  setsid "${PIN_SERVER[@]}" "$@" >"$logf" 2>&1 &
  LAST_PID=$!
  GROUPS_STARTED+=("$LAST_PID")
}

# Waits until `$2` appears in log $1 (or, with `health`, until GET $3 answers), while $4 lives.
wait_ready() {
  local logf=$1 what=$2 url=$3 pid=$4
  for _ in $(seq 1 150); do
    if [[ $what == health ]]; then
      curl -sf -o /dev/null --max-time 1 "$url" && return 0
    else
      grep -q "$what" "$logf" 2>/dev/null && return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "did not start ($logf):"; cat "$logf" >&2
  return 1
}

start_server() { # name port run-name
  local name=$1 port=$2 run=$3
  SERVER_PID="" PEER_PID=""
  case "$name" in
    gateway)
      local app_port=$((port + 1000))
      spawn "$OUT/$run.app.log" env SHOAL_SECRET="$SECRET" node "$BENCH/servers/gateway-echo-app.mjs" --port "$app_port"
      PEER_PID=$LAST_PID
      wait_ready "$OUT/$run.app.log" LISTENING "" "$PEER_PID" || return 1
      cat >"$OUT/$run.shoal.toml" <<TOML
[node]
listen = "127.0.0.1:$port"

[proxy]
secret = "$SECRET"
timeout = 5000

[[namespaces]]
name = "/"
events = { url = "http://127.0.0.1:$app_port/socketio/event", names = ["echo"] }
TOML
      spawn "$OUT/$run.shoal.log" "$SHOAL" --config "$OUT/$run.shoal.toml"
      SERVER_PID=$LAST_PID
      wait_ready "$OUT/$run.shoal.log" health "http://127.0.0.1:$port/health" "$SERVER_PID" ;;
    node)
      spawn "$OUT/$run.log" node "$BENCH/servers/node/single.js" --port "$port"
      SERVER_PID=$LAST_PID
      wait_ready "$OUT/$run.log" LISTENING "" "$SERVER_PID" ;;
    shoal-native)
      spawn "$OUT/$run.log" "$BIN/bench-shoal" --port "$port" --threads 2
      SERVER_PID=$LAST_PID
      wait_ready "$OUT/$run.log" LISTENING "" "$SERVER_PID" ;;
    floor)
      spawn "$OUT/$run.log" "$BIN/bench-floor" --port "$port"
      SERVER_PID=$LAST_PID
      wait_ready "$OUT/$run.log" LISTENING "" "$SERVER_PID" ;;
    *) log "unknown server $name"; return 1 ;;
  esac
}

# The last started first: shoal stops before its app, so the app's going away is not
# logged as failed requests.
stop_servers() {
  local g i
  for ((i = ${#GROUPS_STARTED[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${GROUPS_STARTED[$i]}" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-${GROUPS_STARTED[$i]}" 2>/dev/null || break; sleep 0.1; done
  done
  for _ in $(seq 1 50); do
    local alive=0
    for g in "${GROUPS_STARTED[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for g in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  GROUPS_STARTED=()
}
trap stop_servers EXIT

# ---- runs -------------------------------------------------------------------------------------
cat >"$OUT/meta.json" <<JSON
{
  "mode": "$MODE",
  "command": "bash bench/gateway.sh$SUFFIX",
  "stamp": "$STAMP",
  "clients": $CLIENTS, "rates": [$RATES], "duration_s": $DURATION, "step_duration_s": $STEP_DURATION,
  "warmup_s": $WARMUP, "p99_limit_ms": $P99_LIMIT,
  "pinning": "$PINNING",
  "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')",
  "cores": $(nproc),
  "kernel": "$(uname -r)",
  "node": "$(node --version)",
  "socket_io": "$(node -p 'require("'"$BENCH"'/servers/node/node_modules/socket.io/package.json").version')",
  "shoal_commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}
JSON

FAILED=0
# The next port after PORT that nothing listens on, nor on PORT + 1000 (the app's): this
# machine's own services (NATS on 4222, PostgreSQL on 5432, RabbitMQ on 5672) sit in the range.
busy() { ss -ltnH "( sport = :$1 )" 2>/dev/null | grep -q .; }
next_port() {
  PORT=$((PORT + 1))
  while busy "$PORT" || busy $((PORT + 1000)); do PORT=$((PORT + 1)); done
}
PORT=$((4200 + RANDOM % 1000))
T0=$SECONDS
IFS=, read -r -a RATE_LIST <<<"$RATES"
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for server in "${SERVER_LIST[@]}"; do
  for k in "${!RATE_LIST[@]}"; do
    rate=${RATE_LIST[$k]}
    secs=$STEP_DURATION; ((k == 0)) && secs=$DURATION
    run="${server}__${rate}"
    next_port
    log "$server: $CLIENTS clients, $rate events/s, ${secs} s measured"
    if ! start_server "$server" "$PORT" "$run"; then
      FAILED=1; stop_servers; break
    fi
    args=(echo --clients "$CLIENTS" --rate "$rate" --warmup "$WARMUP" --duration "$secs"
      --server "127.0.0.1:$PORT" --server-pid "$SERVER_PID" --label "$server" --out "$OUT/$run.json" --max-secs 120)
    [[ -n $PEER_PID ]] && args+=(--peer-pid "$PEER_PID")
    [[ $MODE == smoke ]] && args+=(--check)
    [[ $QUIET != 0 ]] && args+=(--wait-quiet "$QUIET")
    rc=0
    "${PIN_LOADGEN[@]}" "$BIN/loadgen" "${args[@]}" >/dev/null || rc=$?
    if [[ $server == gateway ]]; then
      curl -sf --max-time 2 "http://127.0.0.1:$((PORT + 1000))/stats" >"$OUT/$run.app-stats.json" || echo '{}' >"$OUT/$run.app-stats.json"
      curl -sf --max-time 2 "http://127.0.0.1:$PORT/metrics" | grep '^shoal_gateway_proxy' >"$OUT/$run.metrics.txt" || true
    fi
    stop_servers
    if ((rc != 0)); then
      log "FAILED: $server at $rate/s (loadgen exit $rc)"; FAILED=1
    fi
    # Step up only while the step passed: every ack back, p99 under the limit.
    verdict=$(node "$BENCH/gateway-table.mjs" --verdict "$OUT/$run.json" "$P99_LIMIT" "$rate" "$secs")
    log "$server at $rate/s: $verdict"
    [[ $verdict == pass* ]] || break
  done
done
log "runs done in $((SECONDS - T0)) s"

if [[ $MODE == smoke ]]; then
  node "$BENCH/gateway-table.mjs" "$OUT" "$REPORT/gateway.md" "$REPORT/gateway.json" >/dev/null || FAILED=1
  # The app refused nothing: every request carried a valid signature.
  if grep -q '"refused":[1-9]' "$OUT"/gateway__*.app-stats.json; then log "the app refused requests"; FAILED=1; fi
  if ((FAILED)); then log "smoke: FAILED (results in $OUT)"; exit 1; fi
  log "smoke: ok ($OUT)"
else
  node "$BENCH/gateway-table.mjs" "$OUT" "$REPORT/gateway.md" "$REPORT/gateway.json"
  log "report: $REPORT/gateway.md (raw JSON in $OUT)"
  if ((FAILED)); then log "some runs failed; see $OUT"; exit 1; fi
fi
