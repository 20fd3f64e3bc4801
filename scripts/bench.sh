#!/usr/bin/env bash
# Measures sealfs against the tools people use today, on this machine, in
# one run: plain files on tmpfs (the floor), gocryptfs, systemd-creds,
# secret-tool (gnome-keyring), pass (gnupg) and age. Writes
# docs/benchmarks.md and docs/bench-*.png. Needs root (mounts).
#
#   scripts/bench.sh            full run (about 10 minutes)
#   BENCH_QUICK=1 scripts/bench.sh   smaller counts, for trying it out
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
[[ "$(id -u)" == 0 ]] || { echo "bench: needs root (tmpfs, FUSE mounts, systemd-creds host key)" >&2; exit 1; }

if [[ "${SEALFS_SKIP_APT:-0}" != 1 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    fuse3 gocryptfs pass gnupg age hyperfine gnome-keyring libsecret-tools dbus \
    gnuplot-nox python3 systemd procps >/dev/null
fi
cargo build --release --locked --quiet -p sealfs -p sealfs-mountd -p sealfs-bench
bin="$root/target/release"
sealfs="$bin/sealfs"; mountd="$bin/sealfs-mountd"; bench="$bin/sealfs-bench"

quick="${BENCH_QUICK:-0}"
files=1000; rounds=5; runs=3; hf_runs=200; counts=100,10000,100000
if [[ "$quick" == 1 ]]; then files=200; rounds=2; runs=2; hf_runs=30; counts=100,2000; fi

work=$(mktemp -d /tmp/sealfs-bench.XXXXXX)
out="$work/results"; mkdir -p "$out"
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for m in "$work/mnt" "$work/mnt-scale" "$work/gc-plain" "$work/gc-plain-cpu0" "$work/bare" "$work/bare-cpu0" "$work/tmpfs"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

wait_mount() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "bench: $1 did not mount" >&2; exit 1; }
value64() { printf 'secret-%08d-' "$1"; printf 'x%.0s' $(seq 48); }

echo "== preparing $files files of 64 bytes in each store"
mkdir -p "$work/tmpfs" "$work/gc-cipher" "$work/gc-plain" "$work/mnt" "$work/mnt-scale"
mount -t tmpfs -o size=64m tmpfs "$work/tmpfs"
printf 'bench-password' > "$work/pw"
gocryptfs -init -q -extpass "cat $work/pw" "$work/gc-cipher" >/dev/null
gocryptfs -q -extpass "cat $work/pw" "$work/gc-cipher" "$work/gc-plain"
for i in $(seq 0 $((files - 1))); do
  n=$(printf 'k%04d' "$i")
  value64 "$i" > "$work/tmpfs/$n"
done
cp "$work/tmpfs"/k* "$work/gc-plain/"
export SEALFS_VAULT_DIR="$work/vault"
# Root daemons would log every benchmark read to /var/log/sealfs otherwise.
export SEALFS_AUDIT_LOG="$work/audit.log"
"$bench" fill --vault-dir "$SEALFS_VAULT_DIR" --files "$files" >/dev/null
"$mountd" "$work/mnt" 2>"$work/mountd.log" &
pids+=($!); wait_mount "$work/mnt"
# The same vault read-only (no atime invalidation, so no GETATTR per fstat),
# and with the daemon pinned to CPU 0 (to show what cross-CPU wakeups cost).
mkdir -p "$work/mnt-ro" "$work/mnt-cpu0" "$work/mnt-count" "$work/mnt-count-ro"
"$mountd" --read-only "$work/mnt-ro" 2>/dev/null &
pids+=($!); wait_mount "$work/mnt-ro"
taskset -c 0 "$mountd" "$work/mnt-cpu0" 2>/dev/null &
pids+=($!); wait_mount "$work/mnt-cpu0"
# The floor of any FUSE file system here: a fuser fs with sealfs-mountd's
# mount options, flags, TTL and threads that only answers (bench/src/barefs.rs),
# free to run on either CPU and pinned beside the pinned daemons; and a
# gocryptfs daemon pinned to CPU 0 (its children inherit the affinity).
mkdir -p "$work/bare" "$work/bare-cpu0" "$work/gc-plain-cpu0"
"$bench" bare-fs "$work/bare" --files "$files" >/dev/null &
pids+=($!); wait_mount "$work/bare"
taskset -c 0 "$bench" bare-fs "$work/bare-cpu0" --files "$files" >/dev/null &
pids+=($!); wait_mount "$work/bare-cpu0"
taskset -c 0 gocryptfs -q -extpass "cat $work/pw" "$work/gc-cipher" "$work/gc-plain-cpu0"

echo "== 0. FUSE requests per cat (daemon debug log)"
count_requests() { # <name> <mountd flags...>
  local name=$1; shift
  "$mountd" -vv "$@" "$work/mnt-$name" 2>"$work/$name.log" &
  local pid=$!; wait_mount "$work/mnt-$name"
  cat "$work/mnt-$name/global/k0000" >/dev/null; sleep 0.2; : > "$work/$name.log"
  for _ in $(seq 10); do cat "$work/mnt-$name/global/k0000" >/dev/null; done
  sleep 0.3; kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -ao 'FUSE( *[0-9]*) ino [0-9a-fx]* [A-Z_]*' "$work/$name.log" | awk '{print $NF}' \
    | sort | uniq -c | awk -v n="$name" '{printf "%s %s %s\n", n, $2, $1 / 10}'
}
{ count_requests count; count_requests count-ro --read-only; } > "$out/requests.txt"
cat "$out/requests.txt"

echo "== 1. per-open cost: $runs runs x $rounds rounds x $files files, unpinned and on CPU 0"
# open-<store>-<run>.json: daemon and reader free to run on either CPU;
# open-cpu0-<store>-<run>.json: the daemon and the reader both on CPU 0.
# The stores alternate within each run, so a slow spell hits them all.
for run in $(seq "$runs"); do
  for store in tmpfs:"$work/tmpfs" bare:"$work/bare/global" gocryptfs:"$work/gc-plain" sealfs:"$work/mnt/global"; do
    "$bench" open-loop --dir "${store#*:}" --files "$files" --rounds "$rounds" > "$out/open-${store%%:*}-$run.json"
  done
  for store in tmpfs:"$work/tmpfs" bare:"$work/bare-cpu0/global" gocryptfs:"$work/gc-plain-cpu0" sealfs:"$work/mnt-cpu0/global"; do
    taskset -c 0 "$bench" open-loop --dir "${store#*:}" --files "$files" --rounds "$rounds" > "$out/open-cpu0-${store%%:*}-$run.json"
  done
done

echo "== 2. one secret read by a fresh process"
# secret-tool: a real gnome-keyring in a private, unlocked D-Bus session.
mkdir -p "$work/kr/run"; chmod 700 "$work/kr/run"
cat > "$work/kr/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:dir=$work/kr/run</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
CONF
dbus-daemon --config-file="$work/kr/bus.conf" --nofork --print-address=1 > "$work/kr/addr" 2>/dev/null &
pids+=($!); sleep 0.3
export DBUS_SESSION_BUS_ADDRESS; DBUS_SESSION_BUS_ADDRESS=$(head -1 "$work/kr/addr")
(printf 'pw' | HOME="$work/kr" XDG_RUNTIME_DIR="$work/kr/run" gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1) &
pids+=($!); sleep 1
value64 0 | secret-tool store --label=bench service bench key k0000
# pass: a gnupg key without a passphrase.
export GNUPGHOME="$work/gnupg" PASSWORD_STORE_DIR="$work/pass"
mkdir -p "$GNUPGHOME"; chmod 700 "$GNUPGHOME"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key bench@example.invalid default default never 2>/dev/null
pass init bench@example.invalid >/dev/null
value64 0 | pass insert -m bench/k0000 >/dev/null
# systemd-creds with the host key; age with a key file.
value64 0 > "$work/plain64"
systemd-creds encrypt --with-key=host --name=k0000 "$work/plain64" "$work/k0000.cred"
age-keygen -o "$work/age.key" 2>/dev/null
age -e -i "$work/age.key" -o "$work/k0000.age" "$work/plain64"
rm -f "$work/plain64"
hyperfine --shell=none --warmup 10 --runs "$hf_runs" --export-json "$out/process.json" \
  -n "cat tmpfs" "cat $work/tmpfs/k0000" \
  -n "cat gocryptfs" "cat $work/gc-plain/k0000" \
  -n "cat sealfs mount" "cat $work/mnt/global/k0000" \
  -n "cat sealfs mount, read-only" "cat $work/mnt-ro/global/k0000" \
  -n "sealfs get" "$sealfs get global/k0000" \
  -n "sealfs --version" "$sealfs --version" \
  -n "secret-tool lookup" "secret-tool lookup service bench key k0000" \
  -n "pass show" "pass show bench/k0000" \
  -n "systemd-creds decrypt" "systemd-creds decrypt --name=k0000 $work/k0000.cred -" \
  -n "age -d" "age -d -i $work/age.key $work/k0000.age" >/dev/null
# Everything on CPU 0: the daemon (pinned above), hyperfine and its children.
taskset -c 0 hyperfine --shell=none --warmup 10 --runs "$hf_runs" --export-json "$out/process-cpu0.json" \
  -n "cat tmpfs" "cat $work/tmpfs/k0000" \
  -n "cat sealfs mount" "cat $work/mnt-cpu0/global/k0000" >/dev/null

echo "== 3. scale: $counts secrets"
"$bench" scale --vault-dir "$work/scale-vault" --counts "$counts" > "$out/scale.json"
SEALFS_VAULT_DIR="$work/scale-vault" "$mountd" "$work/mnt-scale" 2>/dev/null &
scale_pid=$!; pids+=($scale_pid); wait_mount "$work/mnt-scale"
# The first listing after the mount checks the whole index and decrypts
# every record; the daemon keeps the keys while the index is unchanged.
hyperfine --runs 1 --export-json "$out/ls-cold.json" -n "ls global, first" "ls $work/mnt-scale/global > /dev/null" >/dev/null
hyperfine --warmup 1 --runs 5 --export-json "$out/ls.json" -n "ls global" "ls $work/mnt-scale/global > /dev/null" >/dev/null
grep VmRSS "/proc/$scale_pid/status" | awk '{print $2}' > "$out/rss-kib"

echo "== 3b. the rollback anchor's share of a put"
"$bench" anchor --vault-dir "$work/anchor-vault/vault" > "$out/anchor.json"

echo "== 4. concurrency through the mount"
for t in 1 2 4 8 16; do
  "$bench" concurrent --dir "$work/mnt/global" --files "$files" --threads "$t" --seconds 3 > "$out/conc-sealfs-$t.json"
  "$bench" concurrent --dir "$work/gc-plain" --files "$files" --threads "$t" --seconds 3 > "$out/conc-gocryptfs-$t.json"
  "$bench" concurrent --dir "$work/bare/global" --files "$files" --threads "$t" --seconds 3 > "$out/conc-bare-$t.json"
done

echo "== writing docs/benchmarks.md"
python3 "$root/scripts/bench_report.py" "$out" "$root/docs" "$files" "$rounds" "$runs" "$hf_runs"
echo "done: docs/benchmarks.md"
