#!/usr/bin/env bash
# Writes the man pages of `sealfs` (one per subcommand) and `sealfs-mountd`
# into docs/man, from the same command-line definitions as `--help`.
# scripts/test.sh runs it and fails if the checked-in pages were stale.
set -euo pipefail
cd "$(dirname "$0")/.."
# clap shows an environment variable's value beside its name when it is
# set: the pages are written from a clean one.
while read -r var; do unset "$var"; done < <(env | sed -n 's/^\(SEALFS_[A-Z_]*\)=.*/\1/p')
out=docs/man
rm -rf "$out"
mkdir -p "$out"
cargo run --quiet --locked -p sealfs-cli --bin sealfs -- man-pages "$out"
cargo run --quiet --locked -p sealfs-mountd --bin sealfs-mountd -- --write-man-pages "$out"
