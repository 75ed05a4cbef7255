#!/usr/bin/env bash
# Side-by-side write throughput: etcd (Debian's etcd-server 3.4, `etcdctl check perf
# --load=l`: 500 clients, 60 s) and Telegraft (`telegraft-bench cluster`, 500 clients),
# each with N members on loopback, run one after the other on this machine.
# Usage: scripts/compare-etcd.sh [members] [seconds]   (needs release binaries)
set -euo pipefail
n="${1:-3}"; secs="${2:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"; trap 'pkill -f "etcd --name tgcmp" || true; rm -rf "$work"' EXIT
if ! command -v etcd >/dev/null; then
  echo "installing etcd-server and etcd-client (Debian)"; apt-get install -y etcd-server etcd-client >/dev/null
fi
cluster=""; endpoints=""
for i in $(seq 1 "$n"); do
  cluster+="tgcmp$i=http://127.0.0.1:$((24800 + i)),"; endpoints+="127.0.0.1:$((24700 + i)),"
done
for i in $(seq 1 "$n"); do
  etcd --name "tgcmp$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((24700 + i))" --advertise-client-urls "http://127.0.0.1:$((24700 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((24800 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((24800 + i))" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new >"$work/etcd$i.log" 2>&1 &
done
sleep 3
echo "== etcd, $n members: etcdctl check perf --load=l"
ETCDCTL_API=3 etcdctl --endpoints="${endpoints%,}" check perf --load=l 2>&1 | tr '\r' '\n' | grep -v '^ *[0-9]* / 60' | grep -v '^$' || true
pkill -f "etcd --name tgcmp" || true
sleep 1
echo "== telegraft, $n replicas: telegraft-bench cluster --clients 500 --seconds $secs"
"$target/release/telegraft-bench" --dir "$work/telegraft" --seconds "$secs" cluster --replicas "$n" --clients 500
