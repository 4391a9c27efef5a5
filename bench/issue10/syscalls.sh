#!/usr/bin/env bash
# Syscalls and CPU per delivery: the server pinned to core 0, the load generator to core 1,
# 5,000 clients, `perf stat` on the server over 6 s inside a 12 s measured window.
#
#   bash bench/issue10/syscalls.sh shoal:20 socketioxide:20 floor:20 shoal:40 socketioxide:40 floor:40
#   python3 bench/issue10/summarize.py syscalls bench/results/issue10
set -u
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; B="$BENCH/target/release"
OUT="${OUT:-$BENCH/results/issue10}"; mkdir -p "$OUT"
ulimit -n 20000
port=$((3900 + RANDOM % 50))
EV=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_sched_yield
for spec in "$@"; do
  name=${spec%%:*}; rate=${spec#*:}
  case $name in
    shoal) cmd="$B/bench-shoal --threads 2" ;;
    shoal-1t) cmd="$B/bench-shoal --threads 1" ;;
    socketioxide) cmd="$B/bench-socketioxide --threads 2" ;;
    floor) cmd="$B/bench-floor" ;;
    # Another build of bench-shoal (an experiment on the server), e.g. SHOAL_ALT=/tmp/x/bench-shoal.
    shoal-alt) cmd="${SHOAL_ALT:?set SHOAL_ALT} --threads 2" ;;
    *) echo "unknown server $name" >&2; exit 64 ;;
  esac
  port=$((port + 1))
  taskset -c 0 $cmd --port $port >/dev/null 2>&1 & pid=$!
  sleep 0.5
  taskset -c 1 "$B/loadgen" fanout --clients 5000 --rate "$rate" --warmup 2 --duration 12 --server 127.0.0.1:$port \
    --server-pid $pid --label "$name" --max-secs 90 --wait-quiet 60 --out "$OUT/sys-$name.$rate.json" >/dev/null & lg=$!
  # Until all 5,000 are connected (at most 60 s), then 5 s: connect idle, warm-up, into the window.
  for _ in $(seq 1 600); do
    kill -0 $lg 2>/dev/null || break
    (($(ss -Htn state established "( sport = :$port )" | wc -l) >= 5000)) && break
    sleep 0.1
  done
  sleep 5
  perf stat -x, -e $EV -p $pid -- sleep 6 2>"$OUT/sys-$name.$rate.perf"
  wait $lg
  kill $pid; wait $pid 2>/dev/null
  echo "$name $rate done"
done
