#!/usr/bin/env bash
# Cost per delivery of a fixed fan-out, as counts that do not depend on how busy the
# machine is: user-space instructions (valgrind --tool=callgrind) and syscalls (perf stat
# tracepoints), for the floor server and shoal, same workload.
#
#   bash bench/issue10/instructions.sh [BIN_DIR=bench/target/release] [OUT=/tmp/instr]
#
# Workload: CLIENTS WebSocket clients in room `bench`, a publisher at RATE broadcasts/s of
# 100 bytes (loadgen fanout). Each server runs twice, with a measured window of SHORT and
# LONG seconds; what the two runs differ by is only broadcasts, so
#   instructions per delivery = (I_long - I_short) / (deliveries_long - deliveries_short)
# (connects, joins, heartbeats and closes cancel out). The rate is low enough that the
# server keeps up even under valgrind (one write per delivery; no batching from falling
# behind). shoal runs with one worker thread (callgrind serialises threads anyway).
# The syscall counts come from two more runs without valgrind (perf stat on the server
# process), differenced the same way.
# Env: CLIENTS (1000), RATE (4), SHORT (5), LONG (30), SERVERS ("floor shoal").
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=${1:-$BENCH/target/release}
OUT=${2:-/tmp/instr}
CLIENTS=${CLIENTS:-1000}
RATE=${RATE:-4}
SHORT=${SHORT:-5}
LONG=${LONG:-30}
SERVERS=${SERVERS:-floor shoal}
mkdir -p "$OUT"
ulimit -n 20000 2>/dev/null || true
PORT=$((5800 + RANDOM % 400))

server_cmd() { # name port
  case $1 in
    floor) echo "$BIN/bench-floor --port $2" ;;
    shoal) echo "$BIN/bench-shoal --port $2 --threads 1" ;;
  esac
}

wait_listening() { # log pid
  for _ in $(seq 1 600); do
    grep -q LISTENING "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# One run: server, window seconds, mode (callgrind | perf). Prints "deliveries count".
run_one() {
  local s=$1 secs=$2 mode=$3 tag="$1.$2.$3"
  PORT=$((PORT + 1))
  local cmd; cmd=$(server_cmd "$s" "$PORT")
  if [[ $mode == callgrind ]]; then
    # shellcheck disable=SC2086
    setsid valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.callgrind" $cmd >"$OUT/$tag.log" 2>&1 &
  else
    # shellcheck disable=SC2086
    setsid $cmd >"$OUT/$tag.log" 2>&1 &
  fi
  local pid=$!
  wait_listening "$OUT/$tag.log" "$pid" || { echo "$s did not start" >&2; return 1; }
  local perf_pid=""
  if [[ $mode == perf ]]; then
    perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex \
      -p "$pid" -o "$OUT/$tag.perf" &
    perf_pid=$!
  fi
  "$BIN/loadgen" fanout --clients "$CLIENTS" --rate "$RATE" --warmup 1 --duration "$secs" --concurrency 64 \
    --server "127.0.0.1:$PORT" --label "$s" --out "$OUT/$tag.json" --max-secs 600 >/dev/null 2>"$OUT/$tag.err" || true
  [[ -n $perf_pid ]] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$OUT/$tag.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["delivery"]
print(d["published"] * d["receivers"], d["delivered"], d["ratio"])
PY
}

total_instructions() { # callgrind file
  awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

printf '| server | workload | user instructions per delivery (callgrind) | syscalls per delivery | writes (write+writev+sendto) per delivery |\n|---|---|---|---|---|\n' >"$OUT/table.md"
for s in $SERVERS; do
  read -r d1 got1 r1 < <(run_one "$s" "$SHORT" callgrind)
  read -r d2 got2 r2 < <(run_one "$s" "$LONG" callgrind)
  i1=$(total_instructions "$OUT/$s.$SHORT.callgrind.callgrind")
  i2=$(total_instructions "$OUT/$s.$LONG.callgrind.callgrind")
  read -r d3 got3 r3 < <(run_one "$s" "$SHORT" perf)
  read -r d4 got4 r4 < <(run_one "$s" "$LONG" perf)
  python3 - "$s" "$i1" "$i2" "$d1" "$d2" "$d3" "$d4" "$OUT/$s.$SHORT.perf.perf" "$OUT/$s.$LONG.perf.perf" "$r1/$r2/$r3/$r4" "$CLIENTS" "$RATE" >>"$OUT/table.md" <<'PY'
import sys
s, i1, i2, d1, d2, d3, d4, perf3, perf4, ratios, clients, rate = sys.argv[1:]
i1, i2, d1, d2, d3, d4 = map(int, (i1, i2, d1, d2, d3, d4))
def counts(path):
    c = {}
    for line in open(path):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            c[parts[2]] = int(parts[0])
    return c
c3, c4 = counts(perf3), counts(perf4)
def diff(*keys):
    return sum(c4.get(k, 0) - c3.get(k, 0) for k in keys)
sc = diff("raw_syscalls:sys_enter")
writes = diff("syscalls:sys_enter_write", "syscalls:sys_enter_writev", "syscalls:sys_enter_sendto")
per = (i2 - i1) / (d2 - d1)
ratios = "/".join(f"{float(r):.4f}" for r in ratios.split("/"))
print(f"| {s} | {clients} clients x {rate}/s, delivered {ratios} "
      f"| {per:,.0f} ({i2 - i1:,} over {d2 - d1:,}) | {sc / (d4 - d3):.3f} | {writes / (d4 - d3):.3f} |")
PY
done
cat "$OUT/table.md"
