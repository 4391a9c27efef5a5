#!/usr/bin/env bash
# Soak and faults, with figures (not in CI; docs/reliability.md has the results).
#
#   bash bench/soak.sh            the soak, then the faults
#   bash bench/soak.sh soak       19k WebSocket sessions on one node for 30 min, 10% churn per
#                                 minute, a broadcast every second; RSS every 10 s and its slope
#   bash bench/soak.sh faults     a 3-node cluster on a private redis-server: node kill -9,
#                                 Redis kill -9 + restart, Redis SIGSTOP for 30 s, node kill -9
#
# Environment: SOAK_MINUTES (30), SOAK_CLIENTS (19000), SOAK_CHURN_S (600: each client drops
# after 600 s on average, exponentially, so 10% of them per minute), FAULT_CLIENTS (300),
# FAULT_PAUSE_S (30), SOAK_FEATURES (cargo features of bench-shoal, e.g. `jemalloc` to run the
# server on jemalloc instead of glibc's malloc). Everything runs on loopback; every wait is bounded; the servers and
# redis-server started here are stopped at exit. Results: bench/results/soak-<stamp>/.
# Exit status: 1 if a run failed, 2 if a figure missed its bar (delivery below 100%, RSS not
# flat), 0 otherwise.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
WHAT="${1:-all}"
MINUTES="${SOAK_MINUTES:-30}"
CLIENTS="${SOAK_CLIENTS:-19000}"
CHURN_S="${SOAK_CHURN_S:-600}"
FAULT_CLIENTS="${FAULT_CLIENTS:-300}"
FAULT_PAUSE_S="${FAULT_PAUSE_S:-30}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$BENCH/results/soak-$STAMP"
mkdir -p "$OUT"
log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---- what it needs (idempotent) ---------------------------------------------------------
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v node >/dev/null || need+=(nodejs npm)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
[ -d "$ROOT/tests/js/node_modules/socket.io-client" ] || npm ci --prefix "$ROOT/tests/js" --no-audit --no-fund
log "building loadgen and bench-shoal (release)"
features=()
[ -n "${SOAK_FEATURES:-}" ] && features=(--features "bench-shoal/$SOAK_FEATURES")
cargo build --release --manifest-path "$BENCH/Cargo.toml" -p loadgen -p bench-shoal "${features[@]}"
BIN="$BENCH/target/release"
STATUS=0

# ---- the soak ----------------------------------------------------------------------------
soak() {
  ulimit -n "$(ulimit -Hn)"
  local port=3900 secs=$((MINUTES * 60))
  "$BIN/bench-shoal" --port "$port" --threads 2 --recovery 120000 --heap-log 10 >"$OUT/server.log" 2>&1 &
  local server=$!
  PIDS+=("$server")
  for _ in $(seq 100); do grep -qs LISTENING "$OUT/server.log" && break; sleep 0.1; done
  grep -q LISTENING "$OUT/server.log" || { log "server did not start"; cat "$OUT/server.log"; return 1; }

  # RSS every 10 s, bounded: the run's length plus 10 minutes for connecting and draining.
  (
    for _ in $(seq $(((secs + 600) / 10))); do
      kill -0 "$server" 2>/dev/null || break
      printf '%s %s %s %s\n' "$(date +%s)" $(awk '/^(VmRSS|RssAnon|RssFile):/ {print $2}' "/proc/$server/status")
      sleep 10
    done
  ) >"$OUT/rss.tsv" &
  PIDS+=("$!")

  log "soak: $CLIENTS sessions, ${MINUTES} min, churn mean ${CHURN_S}s, 1 broadcast/s"
  local rc=0
  "$BIN/loadgen" fanout --clients "$CLIENTS" --rate 1 --payload 100 --warmup 2 --duration "$secs" \
    --churn "$CHURN_S" --server "127.0.0.1:$port" --server-pid "$server" --label shoal \
    --max-secs $((secs + 600)) --out "$OUT/fanout.json" >/dev/null 2>"$OUT/loadgen.log" || rc=$?
  kill "$server" 2>/dev/null || true
  [ "$rc" -eq 0 ] || { log "loadgen failed ($rc)"; tail -20 "$OUT/loadgen.log"; return 1; }

  python3 "$BENCH/soak/summary.py" "$OUT" || STATUS=2
}

# ---- the faults --------------------------------------------------------------------------
faults() {
  log "faults: 3 nodes, $FAULT_CLIENTS clients, Redis pause ${FAULT_PAUSE_S}s"
  node "$BENCH/soak/faults.cjs" --shoal "$BIN/bench-shoal" --nodes 3 --clients "$FAULT_CLIENTS" \
    --rate 10 --pause "$FAULT_PAUSE_S" --max-secs 600 --out "$OUT/faults.json" >/dev/null 2>"$OUT/faults.log" || {
    log "faults failed"; tail -20 "$OUT/faults.log"; return 1; }
  python3 - "$OUT/faults.json" <<'EOF' || STATUS=2
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'phase':<12} {'delivered/expected':>22} {'ratio':>8} {'dropped':>8} {'recovered/not':>14} {'resume(s) from start/end':>26}")
for p in r["phases"]:
    rs, re_ = p["resume_from_fault_start_s"], p["resume_from_fault_end_s"]
    print(f"{p['phase']:<12} {p['delivered']:>10}/{p['expected']:<11} {100 * (p['ratio'] or 0):>7.2f}% {p['dropped']:>8} "
          f"{p['reconnects_recovered']:>6}/{p['reconnects_not_recovered']:<7} {str(rs):>12} / {str(re_):<12}")
# The bar: every event published during a phase reached every client (live or recovered).
sys.exit(0 if all(p["delivered"] == p["expected"] for p in r["phases"]) else 1)
EOF
}

case "$WHAT" in
  soak) soak || STATUS=1 ;;
  faults) faults || STATUS=1 ;;
  all) soak || STATUS=1; faults || STATUS=1 ;;
  *) echo "usage: bash bench/soak.sh [soak|faults|all]" >&2; exit 64 ;;
esac
log "results in $OUT (status $STATUS)"
exit "$STATUS"
