#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a short fixed budget (default 20 s), starting
# from the committed seeds (fuzz/seeds/<target>) plus whatever corpus earlier runs left
# in fuzz/corpus/<target> (not committed). Exits non-zero when any target finds a crash,
# a failed property or a leak; the input is left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh            every target, 20 s each
#   FUZZ_SECONDS=600 fuzz/run.sh jwt
#   FUZZ_SANITIZER=none fuzz/run.sh   what CI runs: libFuzzer's coverage and our properties
#                                     without AddressSanitizer, whose build of the C in
#                                     SQLite and aws-lc takes too long for CI's budget
#
# cargo-fuzz needs nightly Rust for the sanitizer flags; without a nightly toolchain,
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them (FUZZ_TOOLCHAIN=stable).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(origin keys jwt json_body upcaster)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if [ "$toolchain" = nightly ] && ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain; building with RUSTC_BOOTSTRAP=1 on stable"
  toolchain=stable
fi
run() {
  if [ "$toolchain" = nightly ]; then
    cargo +nightly fuzz "$@"
  else
    RUSTC_BOOTSTRAP=1 cargo +stable fuzz "$@"
  fi
}

run build -O -s "$sanitizer"
failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  echo "fuzz: $target for ${seconds}s"
  if run run -O -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    # The last status line: executions, coverage (cov) and features (ft), corpus size.
    grep -E '^#[0-9]+' "$log" | tail -1
    grep -E '^stat::number_of_executed_units' "$log" || true
  else
    failed=$((failed + 1))
    tail -60 "$log"
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)"
  fi
  rm -f "$log"
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: ${failed} target(s) failed"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a finding"
