#!/usr/bin/env bash
# A short fuzz run of every target (cargo fuzz, libFuzzer) from the
# committed seed corpus. FUZZ_SECONDS per target (default 10).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# fuzz/ is its own workspace with its own lock file: a dependency added to
# the library or the daemon must reach it too (cargo fuzz would otherwise
# rewrite it silently during the build).
if ! cargo metadata --locked --format-version 1 >/dev/null; then
  echo "fuzz.sh: fuzz/Cargo.lock is out of date: run 'cargo metadata --manifest-path fuzz/Cargo.toml' and commit it" >&2
  exit 1
fi
seconds="${FUZZ_SECONDS:-10}"
cargo +nightly fuzz build -O --sanitizer none
for target in refs envelope policy config; do
  # New inputs go to a scratch directory, so the run never changes the
  # committed corpus.
  scratch=$(mktemp -d)
  echo "== fuzz $target for ${seconds}s"
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run -O --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY|artifact" "$log" || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  rm -rf "$scratch" "$log"
  if [[ "$status" != 0 ]]; then
    echo "fuzz target $target failed" >&2
    exit 1
  fi
  # A target that barely runs proves nothing: every target does well over
  # 10,000 executions a second here, so ask for 1,000 a second at least.
  floor=$((seconds * 1000))
  if [[ -z "$execs" || "$execs" -lt "$floor" ]]; then
    echo "fuzz target $target ran ${execs:-no} executions in ${seconds}s; want >= $floor" >&2
    exit 1
  fi
done
