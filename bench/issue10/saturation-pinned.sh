#!/usr/bin/env bash
# Saturation, as bench/run.sh runs it: server on core 0, loadgen on core 1.
set -u
B="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release"
OUT=${OUT:-/tmp/sat}; mkdir -p $OUT
PORT=4200
for s in ${SERVERS:-floor shoal socketioxide}; do
  PORT=$((PORT+1))
  case $s in
    floor) cmd="$B/bench-floor --port $PORT" ;;
    shoal) cmd="$B/bench-shoal --port $PORT --threads 2" ;;
    socketioxide) cmd="$B/bench-socketioxide --port $PORT --threads 2" ;;
  esac
  setsid taskset -c 0 $cmd > $OUT/$s.log 2>&1 &
  PID=$!
  for i in $(seq 1 100); do grep -q LISTENING $OUT/$s.log && break; sleep 0.1; done
  taskset -c 1 timeout 600 $B/loadgen saturate --clients 5000 --rates 10,20,40,80,120,160,240,320,480 --warmup 2 --duration 8 --p99-limit-ms 250 \
    --server 127.0.0.1:$PORT --server-pid $PID --label $s --max-secs 500 > $OUT/$s.json 2> $OUT/$s.err
  kill $PID; wait $PID 2>/dev/null
  sleep 2
done
