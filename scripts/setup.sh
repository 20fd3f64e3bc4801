#!/usr/bin/env bash
# Installs the system packages sealfs needs to build and test on Debian/Ubuntu,
# then checks that every tool the tests need is there: a missing one fails
# here, not as a skipped test later. Idempotent. SEALFS_SKIP_APT=1 skips the
# install (e.g. when iterating offline) but not the check; only
# SEALFS_ALLOW_SKIP=1 (a partial run, see scripts/test.sh) turns a missing
# tool into a loud warning.
set -euo pipefail

packages=(
  build-essential # cc for the bundled SQLite
  pkg-config
  fuse3           # /dev/fuse helper (fusermount3) for mounts and `sealfs doctor`
  util-linux      # setpriv, to act as other uids in tests; fincore; taskset
  bsdutils        # script: a terminal for the `sealfs run` signal tests
  perl            # commands that count the signals they get (`sealfs run` tests)
  attr            # getfattr/setfattr, to check the mount's xattr answers
  procps          # ps, for the tests that look at processes
  sqlite3         # raw edits of the index in the adversary tests
  dbus            # a private session bus for the Secret Service tests (dbus-daemon, dbus-send)
  dbus-user-session
  gnome-keyring   # the real Secret Service the backend is tested against
  libsecret-tools # secret-tool, to look at what the backend stored
  etcd-server     # the real etcd the fleet backend is tested against
  etcd-client     # etcdctl, to forge and inspect records in tests
  protobuf-compiler # protoc, which etcd-client's build script needs
  libprotobuf-dev # the well-known .proto files protoc imports
  chromium        # the real browser the console's end-to-end test drives
  nodejs          # runs that test (playwright-core, from tests/e2e)
  openssl         # a throwaway certificate for the console's TLS test
  curl            # an HTTPS client for that test
  ca-certificates
)
# What the tests run, one command per component above.
tools=(cc pkg-config fusermount3 setpriv unshare prlimit useradd userdel perl script taskset getfattr setfattr ps sqlite3 dbus-daemon gnome-keyring-daemon
  secret-tool etcd etcdctl protoc chromium node npm openssl curl)

allow_skip="${SEALFS_ALLOW_SKIP:-0}"
# Node.js from NodeSource ships npm; Debian's nodejs needs the npm package.
if ! command -v npm >/dev/null; then
  packages+=(npm)
fi

if [[ "${SEALFS_SKIP_APT:-0}" != 1 ]]; then
  if command -v apt-get >/dev/null; then
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
      sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  elif [[ "$allow_skip" != 1 ]]; then
    echo "setup: no apt-get here; install these yourself: ${packages[*]}" >&2
    echo "setup: (or run a partial test run with SEALFS_ALLOW_SKIP=1)" >&2
    exit 1
  fi
fi

missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ "$allow_skip" == 1 ]]; then
    echo "setup: WARNING: missing ${missing[*]}; tests that need them will be SKIPPED" >&2
  else
    echo "setup: missing after install: ${missing[*]}" >&2
    exit 1
  fi
fi
