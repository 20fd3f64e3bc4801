#!/usr/bin/env bash
# Installs the system packages sealfs needs to build and test on Debian/Ubuntu.
# Idempotent. Set SEALFS_SKIP_APT=1 to skip (e.g. when iterating offline).
set -euo pipefail

packages=(
  build-essential # cc for the bundled SQLite
  pkg-config
  fuse3           # /dev/fuse helper (fusermount3) for mounts and `sealfs doctor`
  util-linux      # setpriv, to act as other uids in tests
  procps          # ps, for the tests that look at processes
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
# Node.js from NodeSource ships npm; Debian's nodejs needs the npm package.
if ! command -v npm >/dev/null; then
  packages+=(npm)
fi

if [[ "${SEALFS_SKIP_APT:-0}" == 1 ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup: no apt-get here; install these yourself: ${packages[*]}" >&2
  exit 0
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
