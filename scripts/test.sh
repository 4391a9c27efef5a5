#!/usr/bin/env bash
# Runs every test of shoal: the Rust unit/integration tests, then the end-to-end suites
# (official socket.io-client over polling, WebSocket and upgrade; headless Chromium on
# the demo page). Works on a fresh Debian machine as root: missing system packages are
# installed with apt-get, JS dependencies with `npm ci` from the committed lockfiles.
#
# Environment: SHOAL_TEST_VERBOSE=1 streams the servers' logs during the JS suites.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() {
  printf '\n==================== %s ====================\n' "$*"
}

# ---------------------------------------------------------------------------
section "system packages"
# command -> Debian package providing it
declare -A NEEDED=(
  [chromium]=chromium
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [nginx]=nginx
  [haproxy]=haproxy
  [node]=nodejs
  [npm]=npm
)
missing=()
for cmd in "${!NEEDED[@]}"; do
  if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ]; then
    echo "found   $cmd: $(command -v "$cmd" || echo "/usr/sbin/$cmd")"
  else
    echo "missing $cmd (package ${NEEDED[$cmd]})"
    missing+=("${NEEDED[$cmd]}")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
node --version
chromium --version 2>/dev/null || true

# ---------------------------------------------------------------------------
section "JS dependencies (npm ci)"
npm ci --prefix tests/js --no-audit --no-fund
npm ci --prefix examples/gateway-node --no-audit --no-fund
# (The demo's socket.io-client bundle is fetched by crates/shoal-server/build.rs.)

# ---------------------------------------------------------------------------
section "cargo build (release: workspace, bins, examples)"
cargo build --release --workspace --examples --bins

# ---------------------------------------------------------------------------
section "cargo test (release)"
cargo test --release --workspace

# ---------------------------------------------------------------------------
section "crate package, API docs and deployment files"
# The library's manifest is complete enough for crates.io (the package is built from
# what it would upload), every public item is documented (missing docs and broken
# links are errors), and the files under deploy/ pass their linters
# (scripts/lint-deploy.sh; deploy/container/test.sh builds and runs the image where a
# container engine works).
cargo publish --dry-run --locked -p shoal
RUSTDOCFLAGS="-D warnings" cargo doc -p shoal --no-deps
bash scripts/lint-deploy.sh
# The image itself is built and run where a container engine answers (stand-in base
# images from Debian's packages when no image registry is reachable, as here).
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  OFFLINE_STANDINS=1 bash deploy/container/test.sh
else
  echo "no working container engine (docker info fails): the image is not built; its files were linted above"
fi

# ---------------------------------------------------------------------------
section "fuzz targets, a few seconds each (fuzz/run.sh)"
# libFuzzer, built on the stable toolchain with cargo-fuzz's instrumentation flags; its
# C++ part needs a C++ compiler. Each target runs FUZZ_SECONDS (default 5) from the
# committed seeds; a finding fails the run (the input is left in fuzz/artifacts/).
if ! command -v c++ >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++
fi
bash fuzz/run.sh "${FUZZ_SECONDS:-5}"

# ---------------------------------------------------------------------------
section "end-to-end JS suites (node --test)"
shopt -s nullglob
js_tests=(tests/js/*.test.mjs)
if [ "${#js_tests[@]}" -eq 0 ]; then
  echo "no JS test files found under tests/js" >&2
  exit 1
fi
node --test --test-concurrency=1 --test-timeout=180000 --test-reporter=spec "${js_tests[@]}"

# ---------------------------------------------------------------------------
section "benchmark suite smoke run (bench/run.sh --smoke)"
# Proves the benchmark suite still builds and runs against every server; the figures
# come from the full run (`bash bench/run.sh`), never from here.
bash bench/run.sh --smoke

section "gateway benchmark smoke run (bench/gateway.sh --smoke)"
# Echo through the event proxy to a Node app, and a plain Node socket.io server: every ack
# must come back and the app must refuse no signature; figures come from `bash bench/gateway.sh`.
bash bench/gateway.sh --smoke

section "all tests passed"
