#!/usr/bin/env bash
# RSS per idle WebSocket session, as bench/run.sh's idle scenarios measure it (bench-shoal
# with 2 worker threads, loadgen idle: RSS growth over the run divided by the sessions).
#
#   bash bench/issue10/idle-rss.sh [BIN_DIR=bench/target/release] [CLIENTS...=10000 19000]
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=${1:-$BENCH/target/release}
shift || true
COUNTS=("${@:-10000 19000}")
[[ $# -eq 0 ]] && COUNTS=(10000 19000)
OUT=${OUT:-/tmp/idle-rss}
mkdir -p "$OUT"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
PORT=$((6300 + RANDOM % 400))
for n in "${COUNTS[@]}"; do
  PORT=$((PORT + 1))
  setsid "$BIN/bench-shoal" --port "$PORT" --threads 2 >"$OUT/server.$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q LISTENING "$OUT/server.$n.log" && break; sleep 0.1; done
  "$BIN/loadgen" idle --clients "$n" --settle 8 --server "127.0.0.1:$PORT" --server-pid "$pid" --label shoal \
    --out "$OUT/idle-$n.json" --max-secs 300 >/dev/null 2>"$OUT/idle-$n.err" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$OUT/idle-$n.json" "$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["server"]
print(f"{sys.argv[2]} sessions: connected {d['connect']['ok']}, RSS {s['rss_before_kib']} -> {s['rss_after_kib']} KiB, "
      f"{s['rss_per_session_bytes']} B ({s['rss_per_session_bytes'] / 1024:.2f} KiB) per session, closed early {d['sessions_closed_early']}")
PY
  sleep 1
done
