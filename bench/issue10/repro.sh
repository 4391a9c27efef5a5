#!/usr/bin/env bash
# Issue 10's setup with the suite's load generator: the server pinned to core 0, the load
# generator to core 1, 5,000 WebSocket clients in one worker process, a publisher at R
# broadcasts/s of 100 bytes, 2 s warm-up, 20 s measured. One run per NAME:RATE.
#
#   bash bench/issue10/repro.sh shoal:10 shoal:20 shoal:40 socketioxide:10 socketioxide:20 socketioxide:40
#
# Build first (cargo build --release in bench/). JSON per run in bench/results/issue10/.
set -u
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; B="$BENCH/target/release"
OUT="${OUT:-$BENCH/results/issue10}"; mkdir -p "$OUT"
ulimit -n 20000
port=$((3500 + RANDOM % 300))
for spec in "$@"; do
  name=${spec%%:*}; rate=${spec#*:}
  case $name in
    shoal) cmd="$B/bench-shoal --threads 2" ;;
    shoal-1t) cmd="$B/bench-shoal --threads 1" ;;
    socketioxide) cmd="$B/bench-socketioxide --threads 2" ;;
    floor) cmd="$B/bench-floor" ;;
    *) echo "unknown server $name" >&2; exit 64 ;;
  esac
  port=$((port + 1))
  taskset -c 0 $cmd --port $port >"$OUT/$name.$rate.log" 2>&1 & pid=$!
  sleep 0.5
  echo "$(date +%T) $name R=$rate load: $(cut -d' ' -f1-3 /proc/loadavg)"
  taskset -c 1 timeout 420 "$B/loadgen" fanout --clients 5000 --rate "$rate" --warmup 2 --duration 20 --per-proc 5000 \
    --server 127.0.0.1:$port --server-pid $pid --label "$name" --max-secs 400 --wait-quiet 300 --out "$OUT/$name.$rate.json" >/dev/null
  kill $pid; wait $pid 2>/dev/null
done
