#!/usr/bin/env bash
# Builds sealfs (installing what the build needs) and runs it.
#
#   scripts/run.sh            store a secret in a throwaway vault and read it back
#   scripts/run.sh ARGS...    run `sealfs ARGS...` against your own vault
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
cargo build --release --locked --quiet --workspace
sealfs="$PWD/target/release/sealfs"
mountd="$PWD/target/release/sealfs-mountd"

if [[ $# -gt 0 ]]; then
  exec "$sealfs" "$@"
fi

demo=$(mktemp -d)
cleanup() {
  if [[ -n "${daemon:-}" ]]; then kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$demo"
}
trap cleanup EXIT
export SEALFS_VAULT_DIR="$demo/vault"
# The CLI's default audit log (beside the vault); named for the daemon too,
# whose default as root is /var/log/sealfs/audit.log.
export SEALFS_AUDIT_LOG="$demo/audit.log"
echo "demo vault: $SEALFS_VAULT_DIR (removed on exit)"
set -x
printf 'sk-demo-%s' "$RANDOM" | "$sealfs" set global/openai_api_key
"$sealfs" get global/openai_api_key; echo
"$sealfs" set principal:alice/github_token --generate 24
"$sealfs" list
"$sealfs" doctor
{ set +x; } 2>/dev/null

if [[ -e /dev/fuse && "$(id -u)" == 0 ]]; then
  mkdir "$demo/mnt"
  "$mountd" "$demo/mnt" &
  daemon=$!
  for _ in $(seq 100); do mountpoint -q "$demo/mnt" && break; sleep 0.05; done
  set -x
  ls -l "$demo/mnt/global" "$demo/mnt/principal/alice"
  cat "$demo/mnt/global/openai_api_key"; echo
  echo rotated-by-echo > "$demo/mnt/global/openai_api_key"
  "$sealfs" get global/openai_api_key
  "$sealfs" audit-log
  { set +x; } 2>/dev/null
else
  echo "(skipping the mount demo: it needs root and /dev/fuse here)"
fi
