#!/usr/bin/env bash
# What the replicas' metrics cost: the same run of scenarios/chat.yaml with `metrics: on` and
# `metrics: off` (replicas without --metrics-listen, nothing scraped), alternated in one
# session so the machine's drift hits both alike, then a table of each run and the medians:
#   scripts/metrics-overhead.sh REPLICAS RATE PAIRS [SECONDS]
# Each run: RATE ops/s offered (open model), 256 users, SECONDS measured (default 15) after a
# 3 s warm-up, no objectives. The results folders stay under results/overhead-<time>/.
set -euo pipefail
replicas="${1:-3}"
rate="${2:-2000}"
pairs="${3:-3}"
seconds="${4:-15}"
for v in "$replicas" "$rate" "$pairs" "$seconds"; do
  case "$v" in
    '' | *[!0-9]*) echo "metrics-overhead: REPLICAS, RATE, PAIRS and SECONDS are numbers, not '$v'" >&2; exit 2 ;;
  esac
done
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
out="results/overhead-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
for i in $(seq 1 "$pairs"); do
  # Alternate which goes first, so neither always runs on a machine warmed by the other.
  if [ $((i % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
  for m in $order; do
    "$loadgen" bench --scenario scenarios/chat.yaml --replicas "$replicas" --no-report \
      --results "$out/$m-$i" --set "metrics=$m" --set "load.rate=$rate" \
      --set load.users=256 --set "load.duration=${seconds}s" --set load.warmup=3s \
      --set 'slo={}' >"$out/$m-$i.log" 2>&1 \
      || echo "metrics $m, pair $i: loadgen exited $? (see $out/$m-$i.log)" >&2
  done
done
python3 - "$out" "$pairs" <<'PY'
import json, pathlib, statistics, sys
out, pairs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = {"on": [], "off": []}
print(f"{'metrics':8} {'pair':>4} {'ops/s':>8} {'send p50':>9} {'send p99':>9} {'get p99':>8} {'replicas CPU %':>15}")
for i in range(1, pairs + 1):
    for m in ("on", "off"):
        runs = sorted((out / f"{m}-{i}").glob("*/summary.json"))
        if not runs:
            print(f"{m:8} {i:>4} no summary.json (see {out}/{m}-{i}.log)")
            continue
        s = json.loads(runs[-1].read_text())
        ops = s["ops"]
        thr = sum(o["throughput"] for o in ops.values())
        send = ops.get("send_message", {}).get("latency_ms", {})
        get = ops.get("get_messages", {}).get("latency_ms", {})
        cpu = sum(p["cpu_pct_mean"] for k, p in s.get("resources", {}).items()
                  if k.startswith("node-") and isinstance(p, dict))
        r = (thr, send.get("p50", 0), send.get("p99", 0), get.get("p99", 0), cpu)
        rows[m].append(r)
        print(f"{m:8} {i:>4} {r[0]:>8.0f} {r[1]:>9.2f} {r[2]:>9.2f} {r[3]:>8.2f} {r[4]:>15.0f}")
print()
for m in ("on", "off"):
    if rows[m]:
        med = [statistics.median(c) for c in zip(*rows[m])]
        print(f"median, metrics {m:3}: {med[0]:.0f} ops/s, send p50 {med[1]:.2f} ms, "
              f"send p99 {med[2]:.2f} ms, get p99 {med[3]:.2f} ms, replicas' CPU {med[4]:.0f}%")
print(f"runs: {out}")
PY
