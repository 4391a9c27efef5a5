#!/usr/bin/env bash
# The cluster benchmarks (issues 4, 5, 6), beside run.sh's single-server suite:
#   fanout2  cross-node fan-out over Redis (fanout2_small: 20 receivers instead of 2,000): shoal (bench-shoal --redis) and Node socket.io
#            (servers/node/redis.js, @socket.io/redis-adapter 8.3), one node / split / all remote
#   hop      echo RTT over WebSocket and polling, direct vs through the forwarding hop
#            (the real `shoal` binary, two nodes on Redis), CPU of each node
#   churn    delivery ratio while receivers drop their connection and reconnect with the
#            recovery handshake: shoal (recovery), Node (in-memory recovery, and the Redis
#            adapter), socketioxide (none)
#
#   recovery_cost  fan-out 2k x 20/s on bench-shoal: recovery off / in memory / in Redis
#            (server CPU, and Redis commands per event from INFO commandstats)
#
#   scale    (issue 14) four shoal nodes (bench-shoal, one process each, ~19k sessions each
#            at full size), SESSIONS WebSocket sessions from loadgen worker processes spread
#            over the four, a broadcast to all of them 1/s: delivered ratio, p50/p99, CPU and
#            RSS per node (RSS per session), Redis CPU; once on one Redis with the classic
#            adapter, once on a 3-primary Redis Cluster with the sharded adapter (dynamic).
#            Then 1,000 rooms of 76 sessions at 10 broadcasts/s each (SCALE_ROOM_RATE), published
#            on node 1 (loadgen fanout --rooms). `scale 4000` runs it at reduced size (rooms of
#            4); not in the default set (about 10 minutes; the whole machine).
#
#   bash bench/cluster.sh [fanout2] [fanout2_small] [hop] [churn] [recovery_cost]   (default: all; ~9 min)
#   bash bench/cluster.sh scale [SESSIONS]                                            (default 76000)
#
# Raw JSON in bench/results/cluster-<stamp>/. Every process it starts is stopped at exit.
# Loopback only; every loadgen run is bounded by --max-secs.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PARTS=("$@"); ((${#PARTS[@]})) || PARTS=(fanout2 fanout2_small hop churn recovery_cost)
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -d "$BENCH/servers/node/node_modules/@socket.io/redis-adapter" ]]; then
  (cd "$BENCH/servers/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
(cd "$BENCH" && CARGO_TARGET_DIR="$BENCH/target" cargo build --release --quiet)
(cd "$ROOT" && cargo build --release --quiet -p shoal-server)
BIN="$BENCH/target/release"
SHOAL="$ROOT/target/release/shoal"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

OUT="$BENCH/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { # a port nobody listens on
  local p
  for _ in $(seq 1 50); do
    # Below the kernel's ephemeral range (32768-60999 here), which the loadgen's tens of
    # thousands of outgoing connections use up: a port taken there fails with EADDRINUSE.
    # A Redis Cluster node also listens on its port + 10000 (the cluster bus): under it too.
    p=$((20000 + RANDOM % 2700))
    ss -ltn "( sport = :$p )" | grep -q ":$p" || { echo "$p"; return; }
  done
  return 1
}

LAST=""
start() { # name port command...: starts it in its own process group, waits for the port
  local name=$1 port=$2; shift 2
  setsid "$@" >"$OUT/$name.log" 2>&1 &
  LAST=$!
  PIDS+=("$LAST")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$LAST" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not start:"; cat "$OUT/$name.log" >&2; return 1
}

stop() { # pid
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true
}

cpu_of() { # CPU seconds of a live process, else 0
  if [[ -n $1 && -r /proc/$1/stat ]]; then awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; else echo 0; fi
}

REDIS_PORT=""; REDIS_PID=""
redis_up() {
  REDIS_PORT=$(free_port)
  start redis "$REDIS_PORT" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
  REDIS_PID=$LAST
}
redis_down() { stop "$REDIS_PID"; REDIS_PID=""; }

loadgen() { # out-name args...: one run; redis-server's CPU over the run goes into the JSON
  local name=$1; shift
  local r0; r0=$(cpu_of "$REDIS_PID")
  log "$name"
  "$BIN/loadgen" "$@" --out "$OUT/$name.json" --max-secs 120 --wait-quiet 20 >/dev/null \
    || log "FAILED: $name (see $OUT/$name.json)"
  local r1; r1=$(cpu_of "$REDIS_PID")
  echo "{\"redis_cpu_s_whole_run\": $(awk "BEGIN{print $r1 - $r0}")}" >"$OUT/$name.redis.json"
}

# ---- issue 4: cross-node fan-out ----------------------------------------------------------
fanout2() { # [clients] [prefix]: 2,000 receivers by default; fanout2_small: 20, where the
  # fan-out's own spread is small and the Redis hop shows alone.
  local clients=${1:-2000} pre=${2:-fanout2}
  local F=(fanout --clients "$clients" --rate 20 --warmup 2 --duration 10 --per-proc $((clients / 2)))
  for kind in shoal node; do
    redis_up
    local p1 p2 a b c
    p1=$(free_port); p2=$(free_port)
    if [[ $kind == shoal ]]; then
      a=("$BIN/bench-shoal" --port "$p1" --threads 2); b=("$BIN/bench-shoal" --port "$p2" --threads 2)
      c=(--redis "redis://127.0.0.1:$REDIS_PORT")
    else
      a=(node "$BENCH/servers/node/redis.js" --port "$p1"); b=(node "$BENCH/servers/node/redis.js" --port "$p2")
      c=(--redis "redis://127.0.0.1:$REDIS_PORT")
    fi
    # One node, no Redis: the reference.
    start "$kind-alone" "$p1" "${a[@]}"; local n0=$LAST
    loadgen "${pre}__${kind}__alone" "${F[@]}" --server "127.0.0.1:$p1" --server-pid "$n0" --label "$kind alone"
    stop "$n0"
    start "$kind-n1" "$p1" "${a[@]}" "${c[@]}"; local n1=$LAST
    start "$kind-n2" "$p2" "${b[@]}" "${c[@]}"; local n2=$LAST
    sleep 1
    # Two nodes, every receiver on the publisher's node (Redis publish, local delivery).
    loadgen "${pre}__${kind}__local" "${F[@]}" --server "127.0.0.1:$p1" --server-pid "$n1" --peer-pid "$n2" --label "$kind 2 nodes, all local"
    # Half the receivers on each node.
    loadgen "${pre}__${kind}__split" "${F[@]}" --server "127.0.0.1:$p1" --receivers-on "127.0.0.1:$p1,127.0.0.1:$p2" \
      --server-pid "$n1" --peer-pid "$n2" --label "$kind 2 nodes, split"
    # Every receiver on the other node: each delivery crosses Redis.
    loadgen "${pre}__${kind}__remote" "${F[@]}" --server "127.0.0.1:$p1" --receivers-on "127.0.0.1:$p2" \
      --server-pid "$n1" --peer-pid "$n2" --label "$kind 2 nodes, all remote"
    stop "$n1"; stop "$n2"
    redis_down
  done
}

# ---- issue 5: the forwarding hop ------------------------------------------------------------
hop() {
  redis_up
  local p1 p2
  p1=$(free_port); p2=$(free_port)
  start shoal-n1 "$p1" "$SHOAL" --listen "127.0.0.1:$p1" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id n1 --log warn
  local n1=$LAST
  start shoal-n2 "$p2" "$SHOAL" --listen "127.0.0.1:$p2" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id n2 --log warn
  local n2=$LAST
  sleep 2 # membership: each node sees the other
  local E=(echo --clients 200 --rate 1000 --warmup 2 --duration 10 --server "127.0.0.1:$p1" --server-pid "$n1" --peer-pid "$n2")
  for t in websocket polling; do
    loadgen "hop__${t}__direct" "${E[@]}" --transport "$t" --via "127.0.0.1:$p1" --label "shoal $t direct"
    loadgen "hop__${t}__hop" "${E[@]}" --transport "$t" --via "127.0.0.1:$p2" --label "shoal $t via n2"
  done
  stop "$n1"; stop "$n2"
  redis_down
}

# ---- issue 6: churn ---------------------------------------------------------------------------
churn() {
  local C=(fanout --clients 1000 --rate 20 --warmup 2 --duration 10 --churn 5)
  local servers=(
    "shoal-recovery|$BIN/bench-shoal --threads 2 --recovery 120000 --port"
    "shoal-norecovery|$BIN/bench-shoal --threads 2 --port"
    "node-recovery|node $BENCH/servers/node/single.js --recovery 120000 --port"
    "socketioxide|$BIN/bench-socketioxide --threads 2 --port"
  )
  for entry in "${servers[@]}"; do
    local name=${entry%%|*} cmd=${entry#*|} p
    p=$(free_port)
    # shellcheck disable=SC2086
    start "$name" "$p" $cmd "$p"
    local n=$LAST
    loadgen "churn__$name" "${C[@]}" --server "127.0.0.1:$p" --server-pid "$n" --label "$name"
    stop "$n"
  done
  # Node on the Redis adapter (no recovery with the classic pub/sub adapter).
  redis_up
  p=$(free_port)
  start node-redis "$p" node "$BENCH/servers/node/redis.js" --port "$p" --redis "redis://127.0.0.1:$REDIS_PORT"
  local n=$LAST
  loadgen "churn__node-redis" "${C[@]}" --server "127.0.0.1:$p" --server-pid "$n" --label "node-redis"
  stop "$n"
  # shoal, recovery in Redis: one node, then two nodes where every other reconnection goes
  # to the other node (the session is recovered there from Redis).
  p=$(free_port)
  start shoal-redis-recovery "$p" "$BIN/bench-shoal" --port "$p" --threads 2 --recovery 120000 --redis "redis://127.0.0.1:$REDIS_PORT"
  n=$LAST
  loadgen "churn__shoal-redis-recovery" "${C[@]}" --server "127.0.0.1:$p" --server-pid "$n" --label "shoal-redis-recovery"
  stop "$n"
  local q; p=$(free_port); q=$(free_port)
  start shoal-cross-n1 "$p" "$BIN/bench-shoal" --port "$p" --threads 1 --recovery 120000 --redis "redis://127.0.0.1:$REDIS_PORT"
  n=$LAST
  start shoal-cross-n2 "$q" "$BIN/bench-shoal" --port "$q" --threads 1 --recovery 120000 --redis "redis://127.0.0.1:$REDIS_PORT"
  local m=$LAST
  loadgen "churn__shoal-cross-node" "${C[@]}" --server "127.0.0.1:$p" --reconnect-to "127.0.0.1:$q" --server-pid "$n" --peer-pid "$m" --label "shoal-cross-node"
  stop "$n"; stop "$m"
  redis_down
}

# ---- issue 6: the cost of recovery at the fan-out scenario ------------------------------------
recovery_cost() {
  local F=(fanout --clients 2000 --rate 20 --warmup 2 --duration 10)
  redis_up
  local variants=(
    "off|"
    "memory|--recovery 120000"
    "redis|--recovery 120000 --redis redis://127.0.0.1:$REDIS_PORT"
  )
  for entry in "${variants[@]}"; do
    local name=${entry%%|*} extra=${entry#*|} p
    p=$(free_port)
    # shellcheck disable=SC2086
    start "shoal-recovery-$name" "$p" "$BIN/bench-shoal" --port "$p" --threads 2 $extra
    local n=$LAST
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    loadgen "recovery_cost__$name" "${F[@]}" --server "127.0.0.1:$p" --server-pid "$n" --label "shoal recovery $name"
    redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/recovery_cost__$name.commandstats.txt"
    stop "$n"
  done
  redis_down
}

# ---- issue 14: four nodes, many sessions, classic vs sharded ---------------------------------
CLUSTER_PIDS=(); CLUSTER_URL=""
redis_cluster_up() { # 3 primaries, no replicas, in a temporary directory
  local dir ports=() p
  dir=$(mktemp -d)
  for i in 1 2 3; do
    p=$(free_port)
    start "redis-cluster-$i" "$p" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --dir "$dir"
    CLUSTER_PIDS+=("$LAST"); ports+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${ports[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/redis-cluster-create.log" 2>&1
  for _ in $(seq 1 100); do
    redis-cli -p "${p}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.2
  done
  CLUSTER_URL="redis+cluster://$(IFS=,; echo "${ports[*]}")"
}
redis_cluster_down() { for p in "${CLUSTER_PIDS[@]}"; do stop "$p"; done; CLUSTER_PIDS=(); }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# One loadgen run of the scale part on the four nodes: the nodes' CPU and peak RSS, the
# Redis servers' CPU, beside the loadgen's JSON ($OUT/scale__<name>.json, .nodes.json).
scale_run() { # name sessions per_proc loadgen-fanout-args...
  local name=$1 sessions=$2 per_proc=$3; shift 3
  local base_rss=() cpu0=() r0=0 pid
  for pid in "${SCALE_PIDS[@]}"; do base_rss+=("$(rss_kib "$pid")"); cpu0+=("$(cpu_of "$pid")"); done
  for pid in "${SCALE_REDIS[@]}"; do r0=$(awk "BEGIN{print $r0 + $(cpu_of "$pid")}"); done
  # RSS of each node while the sessions are up: the highest of samples every 2 s.
  local peak="$OUT/scale__$name.rss"
  ( while sleep 2; do for pid in "${SCALE_PIDS[@]}"; do echo "$pid $(rss_kib "$pid")"; done; done >"$peak" ) &
  local sampler=$!
  log "scale: $name, $sessions sessions on 4 nodes: loadgen fanout $*"
  "$BIN/loadgen" fanout --clients "$sessions" "$@" --per-proc "$per_proc" \
    --server "${SCALE_ADDRS[0]}" --receivers-on "$(IFS=,; echo "${SCALE_ADDRS[*]}")" --server-pid "${SCALE_PIDS[0]}" --peer-pid "${SCALE_PIDS[1]}" \
    --label "shoal 4 nodes, $name" --out "$OUT/scale__$name.json" --max-secs 900 --wait-quiet 20 >/dev/null \
    || log "FAILED: scale $name (see $OUT/scale__$name.json)"
  kill "$sampler" 2>/dev/null || true
  local r1=0 nodes_json=""
  for pid in "${SCALE_REDIS[@]}"; do r1=$(awk "BEGIN{print $r1 + $(cpu_of "$pid")}"); done
  for i in 0 1 2 3; do
    local top
    pid=${SCALE_PIDS[$i]}
    top=$(awk -v p="$pid" '$1 == p && $2 > m {m = $2} END {print m + 0}' "$peak")
    nodes_json+="${nodes_json:+,}{\"pid\": $pid, \"cpu_s\": $(awk "BEGIN{print $(cpu_of "$pid") - ${cpu0[$i]}}"), \"rss_idle_kib\": ${base_rss[$i]}, \"rss_peak_kib\": $top, \"rss_per_session_bytes\": $(( (top - base_rss[i]) * 1024 * 4 / sessions ))}"
  done
  echo "{\"run\": \"$name\", \"sessions\": $sessions, \"redis_cpu_s\": $(awk "BEGIN{print $r1 - $r0}"), \"nodes\": [$nodes_json]}" >"$OUT/scale__$name.nodes.json"
  log "$(cat "$OUT/scale__$name.nodes.json")"
}

scale() { # [sessions]
  local sessions=${1:-76000}
  # Four worker processes per node at full size (19k sessions each, 4,750 per process).
  local per_proc=$(( (sessions + 15) / 16 ))
  local rooms=1000 room_rate=${SCALE_ROOM_RATE:-10}
  ((sessions >= rooms)) || rooms=$((sessions / 4))
  for adapter in classic sharded; do
    local url extra=()
    SCALE_REDIS=() SCALE_PIDS=() SCALE_ADDRS=()
    if [[ $adapter == classic ]]; then
      redis_up; SCALE_REDIS=("$REDIS_PID"); url="redis://127.0.0.1:$REDIS_PORT"
    else
      redis_cluster_up; SCALE_REDIS=("${CLUSTER_PIDS[@]}"); url=$CLUSTER_URL; extra=(--sharded dynamic)
    fi
    local p
    for i in 1 2 3 4; do
      p=$(free_port)
      start "scale-$adapter-n$i" "$p" "$BIN/bench-shoal" --port "$p" --threads 2 --redis "$url" "${extra[@]}"
      SCALE_ADDRS+=("127.0.0.1:$p"); SCALE_PIDS+=("$LAST")
    done
    sleep 1
    # A broadcast to every session, 1/s.
    scale_run "$adapter" "$sessions" "$per_proc" --rate 1 --warmup 5 --duration 30
    # 1,000 rooms of 76 (at 76k sessions), each getting SCALE_ROOM_RATE broadcasts/s
    # (default 10: 10,000 room broadcasts/s in all), published on node 1.
    scale_run "$adapter-rooms" "$sessions" "$per_proc" --rooms "$rooms" --rate $((rooms * room_rate)) --warmup 5 --duration 20
    for pid in "${SCALE_PIDS[@]}"; do stop "$pid"; done
    if [[ $adapter == classic ]]; then redis_down; else redis_cluster_down; fi
  done
}

while ((${#PARTS[@]})); do
  part=${PARTS[0]}; PARTS=("${PARTS[@]:1}")
  case "$part" in
    fanout2|hop|churn|recovery_cost) "$part" ;;
    fanout2_small) fanout2 20 fanout2s ;;
    scale)
      if ((${#PARTS[@]})) && [[ ${PARTS[0]} =~ ^[0-9]+$ ]]; then scale "${PARTS[0]}"; PARTS=("${PARTS[@]:1}"); else scale; fi ;;
    *) echo "unknown part $part" >&2; exit 64 ;;
  esac
done
log "results in $OUT"
echo "$OUT"
