#!/usr/bin/env bash
# Measures the fleet vault on a 3-node etcd cluster on loopback (started
# here, data on disk under /var/tmp so fsync is real): one scope at 100 and
# 100,000 secrets, 50 writer processes on one scope beside etcd's own
# `etcdctl check perf`, 200 watching connections while a secret rotates,
# and `fleet revoke` with 1,000 scopes and 1,000 members. Writes the raw
# results to docs/fleet-bench-results.json; docs/fleet-benchmarks.md reads
# them.
#
#   scripts/bench-fleet.sh                full run (about 20 minutes)
#   BENCH_QUICK=1 scripts/bench-fleet.sh  smaller counts, for trying it out
#   BENCH_ONLY="watch revoke" scripts/bench-fleet.sh   some parts only
#     (parts: scale perf writers watch revoke; a run's results are written
#     to docs/ only when it is a full one)
# Results so far are kept in target/bench-fleet-results.json as each part
# ends, so a part that fails loses nothing measured before it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
command -v etcd >/dev/null || { echo "bench-fleet: needs etcd and etcdctl (scripts/setup.sh installs them)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "bench-fleet: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }

cargo build --release --locked --quiet -p sealfs-bench
bench="$root/target/release/sealfs-bench"

quick="${BENCH_QUICK:-0}"
counts=100,100000; samples=200; procs=50; puts=100; watchers=200; rotations=10
members=1000; scopes=1000; perf=1
if [[ "$quick" == 1 ]]; then
  counts=100,2000; samples=50; procs=10; puts=20; watchers=20; rotations=3
  members=20; scopes=50; perf=0
fi

work=$(mktemp -d /var/tmp/sealfs-bench-fleet.XXXXXX)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cluster="" endpoints=""
declare -a client peer
for i in 0 1 2; do
  client[$i]=$(port); peer[$i]=$(port)
  cluster+="${cluster:+,}n$i=http://127.0.0.1:${peer[$i]}"
  endpoints+="${endpoints:+,}http://127.0.0.1:${client[$i]}"
done
for i in 0 1 2; do
  etcd --name "n$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${client[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${peer[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --quota-backend-bytes=$((8 * 1024 * 1024 * 1024)) \
    >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
etcdctl --endpoints="$endpoints" endpoint health >/dev/null
echo "== etcd $(etcd --version | head -1 | awk '{print $3}') cluster: $endpoints" >&2

results="$root/target/bench-fleet-results.json"
only="${BENCH_ONLY:-scale perf writers watch revoke}"
part() { [[ " $only " == *" $1 "* ]]; }
echo '{}' >"$results"
add() { # add NAME JSON
  python3 - "$results" "$1" "$2" <<'EOF'
import json, sys
path, name, value = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
d = json.load(open(path)); d[name] = value; json.dump(d, open(path, "w"), indent=1)
EOF
}

if part scale; then
echo "== one scope at $counts secrets" >&2
add scale "$("$bench" fleet-scale --dir "$work/scale" --endpoints "$endpoints" --counts "$counts" --samples "$samples")"
fi

if [[ "$perf" == 1 ]] && part perf; then
  # The large load asks for 8,000 writes/s from 1,000 clients: far above
  # what this cluster takes, so what it reaches is its ceiling (the check
  # itself "fails").
  echo "== etcdctl check perf --load=l (the cluster's own ceiling, 60 s)" >&2
  out=$(etcdctl --endpoints="$endpoints" check perf --load=l 2>&1 || true)
  # "PASS: Throughput is 150 writes/s" and the latency lines, as text.
  add etcd_check_perf "$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()[-6:]))' <<<"$out")"
fi

if part writers; then
echo "== $procs writer processes on one scope, $puts puts each" >&2
add writers "$("$bench" fleet-writers --dir "$work/writers" --endpoints "$endpoints" --procs "$procs" --puts "$puts")"

fi

if part watch; then
echo "== $watchers watching connections, $rotations rotations per case" >&2
add watch "$("$bench" fleet-watch --dir "$work/watch" --endpoints "$endpoints" --watchers "$watchers" --rotations "$rotations")"

fi

if part revoke; then
echo "== fleet revoke with $scopes scopes and $members members" >&2
add revoke "$("$bench" fleet-revoke --dir "$work/revoke" --endpoints "$endpoints" --members "$members" --scopes "$scopes")"
fi

add machine "$(python3 -c 'import json,os,platform; print(json.dumps({"cpus": os.cpu_count(), "kernel": platform.release(), "quick": os.environ.get("BENCH_QUICK","0")=="1"}))')"
if [[ "$quick" == 1 || -n "${BENCH_ONLY:-}" ]]; then
  cat "$results"
else
  cp "$results" docs/fleet-bench-results.json
  echo "== wrote docs/fleet-bench-results.json" >&2
fi
if [[ "$quick" != 1 && -z "${BENCH_ONLY:-}" ]]; then
  python3 scripts/bench_fleet_report.py docs/fleet-bench-results.json docs/fleet-bench.png
  echo "== drew docs/fleet-bench.png" >&2
fi
