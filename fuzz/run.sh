#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the stable toolchain and runs each of them.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]       each target for SECONDS (default 5)
#   FUZZ_RUNS=10000000 bash fuzz/run.sh 0 query  a target for a number of executions
#
# The build passes rustc the flags `cargo fuzz build --sanitizer none` passes (SanitizerCoverage:
# 8-bit counters, PC table, compare tracing; `--cfg fuzzing`), all stable, so it needs neither
# nightly nor cargo-fuzz; `cargo fuzz run <target>` works on the same crate too (with
# RUSTC_BOOTSTRAP=1 on stable, for its default AddressSanitizer). The committed seeds in
# fuzz/corpus/<target> are read, never written: new inputs go to fuzz/corpus-new/<target>
# (ignored by git), crashes to fuzz/artifacts/<target>. Exits non-zero on the first finding.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_EACH="${1:-5}"
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
  TARGETS=(engine_packet engine_packet_v3 socket_packet msgpack_packet value_json redis_wire proxy_protocol client_addr query)
fi

TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Coverflow-checks ${FUZZ_RUSTFLAGS:-}"
# --target keeps RUSTFLAGS away from build scripts, as cargo-fuzz does.
# Not --locked: a dependency added to shoal must not break this build; the lockfile keeps
# the versions it has.
cargo build --release --target "$TRIPLE" --bins

for t in "${TARGETS[@]}"; do
  mkdir -p "corpus-new/$t" "artifacts/$t" "corpus/$t"
  if [ -n "${FUZZ_RUNS:-}" ]; then
    limit=(-runs="$FUZZ_RUNS") what="$FUZZ_RUNS runs"
  else
    limit=(-max_total_time="$SECONDS_EACH") what="${SECONDS_EACH}s"
  fi
  echo "---- fuzz $t ($what)"
  log="artifacts/$t/last-run.log"
  status=0
  "${CARGO_TARGET_DIR:-target}/$TRIPLE/release/$t" "${limit[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus-new/$t" "corpus/$t" >"$log" 2>&1 || status=$?
  grep -E '^(INFO: seed corpus|#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "FINDING in $t (exit $status): see fuzz/$log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
