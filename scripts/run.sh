#!/usr/bin/env bash
# Builds sealfs (installing what the build needs) and runs it.
#
#   scripts/run.sh            store a secret in a throwaway vault and read it back
#   scripts/run.sh ARGS...    run `sealfs ARGS...` against your own vault
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
cargo build --release --locked --quiet
sealfs="$PWD/target/release/sealfs"

if [[ $# -gt 0 ]]; then
  exec "$sealfs" "$@"
fi

demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
export SEALFS_VAULT_DIR="$demo/vault"
echo "demo vault: $SEALFS_VAULT_DIR (removed on exit)"
set -x
printf 'sk-demo-%s' "$RANDOM" | "$sealfs" set global/openai_api_key
"$sealfs" get global/openai_api_key; echo
"$sealfs" set principal:alice/github_token --generate 24
"$sealfs" list
"$sealfs" doctor
