#!/usr/bin/env bash
# Builds the image of deploy/container/Dockerfile, runs it, and checks what a deployment
# relies on: GET /health answers 200, an Engine.IO handshake works, the process is not
# root, the image's HEALTHCHECK turns "healthy", and `docker stop` (SIGTERM) ends the
# node with exit code 0 well within its grace period.
#
# Needs a working container engine (`docker info`; DOCKER_HOST is honoured). Without
# one it says so and runs the linters instead (scripts/lint-deploy.sh).
#
# Base images: RUST_IMAGE and RUNTIME_IMAGE (the Dockerfile's defaults unless set). If
# they cannot be pulled (no registry reachable) and OFFLINE_STANDINS=1, stand-ins are
# made for this test only: Debian bookworm from Debian's packages (debootstrap) for the
# runtime, and the same plus the host's Rust toolchain for the build stage.
#
# Usage: bash deploy/container/test.sh        (from anywhere; takes a few minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
IMAGE="${IMAGE:-shoal:test}"
RUST_IMAGE="${RUST_IMAGE:-rust:1.85-slim-bookworm}"
RUNTIME_IMAGE="${RUNTIME_IMAGE:-debian:bookworm-slim}"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "no working container engine (docker info failed): the image is not built here;"
  echo "running the linters only"
  exec bash scripts/lint-deploy.sh
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }

make_standins() {
  local work="$ROOT/target/container-test" sysroot
  mkdir -p "$work"
  if [ ! -x "$work/rootfs/bin/bash" ]; then
    command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; }
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
  fi
  # The host's own CAs (e.g. of a TLS-inspecting proxy) are trusted in the stand-ins,
  # so the build stage reaches crates.io and the npm registry as the host does.
  mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  RUNTIME_IMAGE=shoal-standin/debian:bookworm
  tar -C "$work/rootfs" -c . | docker import - "$RUNTIME_IMAGE" >/dev/null
  sysroot="$(rustc --print sysroot)"
  RUST_IMAGE=shoal-standin/rust:local
  DOCKER_BUILDKIT=0 docker build -q --network host -t "$RUST_IMAGE" -f - "$sysroot" >/dev/null <<STANDIN
FROM $RUNTIME_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/* && update-ca-certificates
COPY . /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CARGO_HOME=/usr/local/cargo NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
STANDIN
  echo "stand-in base images: $RUST_IMAGE, $RUNTIME_IMAGE"
}

if ! have_image "$RUST_IMAGE" || ! have_image "$RUNTIME_IMAGE"; then
  if [ "${OFFLINE_STANDINS:-0}" != 1 ]; then
    echo "cannot pull $RUST_IMAGE or $RUNTIME_IMAGE; set OFFLINE_STANDINS=1 to build stand-ins" >&2
    exit 1
  fi
  make_standins
fi

echo "--- building $IMAGE (build stage $RUST_IMAGE, runtime $RUNTIME_IMAGE)"
start=$SECONDS
DOCKER_BUILDKIT=0 docker build --network host -q -f deploy/container/Dockerfile \
  --build-arg RUST_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" -t "$IMAGE" . >/dev/null
echo "built in $((SECONDS - start)) s; image size $(( $(docker image inspect --format '{{.Size}}' "$IMAGE") / 1000000 )) MB"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# As a locked-down orchestrator runs it: read-only root, no capabilities.
cid="$(docker run -d --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
  --health-interval 2s --health-start-period 1s -e SHOAL_LISTEN="127.0.0.1:$port" "$IMAGE")"
cleanup() { docker rm -f "$cid" >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; docker logs "$cid" 2>&1 | tail -n 20 >&2; exit 1; }
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

for _ in $(seq 1 100); do
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)"
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || fail "GET /health answered '$code', not 200, within 10 s"
ok "GET /health 200: $(curl -s "http://127.0.0.1:$port/health")"

open="$(curl -s "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling")"
[[ "$open" == 0\{\"sid\":* ]] || fail "Engine.IO handshake answered '$open'"
ok "Engine.IO handshake: ${open:0:60}..."

uid="$(docker exec "$cid" id -u)"
[ "$uid" = 10001 ] || fail "the node runs as uid $uid, not 10001"
ok "runs as uid $uid"

for _ in $(seq 1 30); do
  health="$(docker inspect --format '{{.State.Health.Status}}' "$cid")"
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || fail "HEALTHCHECK status is '$health' after 30 s"
ok "HEALTHCHECK: $health"

start=$SECONDS
docker stop -t 30 "$cid" >/dev/null
took=$((SECONDS - start))
exit_code="$(docker inspect --format '{{.State.ExitCode}}' "$cid")"
[ "$exit_code" = 0 ] || fail "exit code $exit_code after SIGTERM"
[ "$took" -le 10 ] || fail "took $took s to stop after SIGTERM"
ok "SIGTERM: drained and exited with 0 in ${took} s"
docker logs "$cid" 2>&1 | grep -q "SIGTERM received" || fail "the log does not show the SIGTERM"
ok "the log shows the drain"

echo "$passed passed, 0 failed"
