#!/usr/bin/env bash
# Heap per idle WebSocket session, field by field: bench-shoal under valgrind DHAT with N
# idle sessions (the loadgen's idle scenario), stopped while every session is still open
# (BENCH_EXIT_AT_ONCE: exit on SIGTERM without closing anything), then the heap live at
# exit per session, by allocation site (dhat_sites.py). Allocation counts and sizes are
# exact and do not depend on how busy the machine is.
#
#   bash bench/issue10/idle-dhat.sh [SESSIONS=1000] [OUT=/tmp/idle-dhat]
#
# Needs valgrind (Debian: valgrind) and the bench binaries (cargo build --release in bench/).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${1:-1000}
OUT=${2:-/tmp/idle-dhat}
B="${BIN:-$BENCH/target/release}"
mkdir -p "$OUT"
PORT=$((5200 + RANDOM % 500))
BENCH_EXIT_AT_ONCE=1 setsid valgrind --tool=dhat --dhat-out-file="$OUT/dhat.json" \
  "$B/bench-shoal" --port "$PORT" --threads 1 >"$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do grep -q LISTENING "$OUT/server.log" && break; sleep 0.2; done
grep -q LISTENING "$OUT/server.log" || { echo "server did not start" >&2; kill "$SERVER"; exit 1; }
# The sessions stay open for up to 120 s; the server is stopped once all N are up.
"$B/loadgen" idle --clients "$N" --settle 120 --concurrency 32 --server "127.0.0.1:$PORT" --max-secs 300 \
  >"$OUT/loadgen.json" 2>"$OUT/loadgen.err" &
LOADGEN=$!
up=0
for _ in $(seq 1 600); do
  up=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
  ((up >= N)) && break
  sleep 0.5
done
sleep 3 # every CONNECT answered and the handshakes' transient buffers gone
echo "established: $up of $N" >&2
kill -TERM "$SERVER"
wait "$SERVER" || true
kill "$LOADGEN" 2>/dev/null || true
wait "$LOADGEN" 2>/dev/null || true
python3 "$BENCH/issue10/dhat_sites.py" "$OUT/dhat.json" "$up" | tee "$OUT/sites.md"
