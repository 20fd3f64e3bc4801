#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine and runs everything CI checks:
# formatting, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== Windows and macOS type checks"
scripts/check-targets.sh
echo "== fuzz (short run of every target)"
scripts/fuzz.sh
echo "== browser test dependencies (playwright-core, pinned in tests/e2e/package-lock.json)"
npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
echo "== tests"
# Whole-run guard; nextest additionally kills any single test after 5 minutes.
if command -v cargo-nextest >/dev/null; then
  # nextest does not run doc tests; run them first so its summary ends the log.
  cargo test --workspace --locked --doc --quiet
  timeout -k 30s 40m cargo nextest run --workspace --locked --profile ci
else
  timeout -k 30s 40m cargo test --workspace --locked
fi
# Tests must not rewrite tracked files.
if git rev-parse --git-dir >/dev/null 2>&1; then
  git diff --exit-code --stat >&2
fi
