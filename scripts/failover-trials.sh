#!/usr/bin/env bash
# Repeats one fault on a fresh 3-replica cluster and tabulates what it cost: write
# unavailability (from the fault to the first acknowledgement of a write sent after it), failed
# calls, and the history check. Used for the failover tables in loadgen/README.md:
#   scripts/failover-trials.sh FAULT TRIALS [SYSTEM [LOADGEN-ARGS...]]
# FAULT is kill (SIGKILL the leader at 3 s, restart it at 6 s), pause (SIGSTOP the leader at
# 3 s for 3 s) or partition (cut the leader off at 3 s for 3 s). Each trial is an 8 s run of
# scenarios/failover.yaml (300 ops/s, 40% writes, routing: any); its results folder stays
# under results/trials-<fault>-<time>/. SYSTEM is telegraft (the default) or etcd (members of
# Debian's etcd-server; partitions need Telegraft's fault hook). More arguments go to every
# `loadgen bench` (`--set cluster.election_timeout=150ms`).
set -euo pipefail
fault="${1:-pause}"
trials="${2:-10}"
system="${3:-telegraft}"
shift $(( $# < 3 ? $# : 3 ))
case "$fault" in
  kill) faults='[{at: 3s, action: kill, target: leader}, {at: 6s, action: restart, target: killed}]' ;;
  pause) faults='[{at: 3s, action: pause, target: leader, for: 3s}]' ;;
  partition) faults='[{at: 3s, action: partition, target: leader, for: 3s}]' ;;
  *) echo "failover-trials: FAULT must be kill, pause or partition, not '$fault'" >&2; exit 2 ;;
esac
case "$trials" in
  '' | *[!0-9]*) echo "failover-trials: TRIALS must be a number, not '$trials'" >&2; exit 2 ;;
esac
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
out="results/trials-$fault-$system-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
for i in $(seq 1 "$trials"); do
  # An objective missed or an anomaly is what the table reports, not a reason to stop.
  "$loadgen" bench --scenario scenarios/failover.yaml --results "$out/$i" \
    --set load.duration=8s --set load.warmup=1s --set "faults=$faults" --set "system=$system" "$@" \
    >"$out/$i.log" 2>&1 \
    || echo "trial $i: loadgen exited $?" >&2
done
python3 - "$out" "$fault" "$trials" <<'PY'
import json, pathlib, statistics, sys
out, fault, trials = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = []
for i in range(1, trials + 1):
    runs = sorted((out / str(i)).glob("*/summary.json"))
    if not runs:
        print(f"trial {i}: no summary.json (see {out}/{i}.log)")
        continue
    s = json.loads(runs[-1].read_text())
    first = (s.get("faults") or [{}])[0]
    ops = s.get("ops") or {}
    errors = calls = 0
    for op in ops.values():
        calls += op.get("count", 0) + op.get("errors", 0)
        errors += op.get("errors", 0)
    verdict = (s.get("check") or {}).get("verdict", "?")
    # Failed calls by when they were sent: before the fault, inside its unavailability
    # window, or after the window (how long after, in ms).
    late = []
    if first.get("unavailable_ms") is not None:
        t0 = (s["warmup_s"] + first["at_s"]) * 1e6
        t1 = t0 + first["unavailable_ms"] * 1e3
        with open(runs[-1].parent / "history.jsonl") as h:
            for line in h:
                r = json.loads(line)
                if r.get("outcome") in ("fail", "unknown") and r["invoke_us"] > t1:
                    late.append(round((r["invoke_us"] - t1) / 1e3))
    rows.append((first.get("unavailable_ms"), errors, calls, verdict, late))
ms = [r[0] for r in rows if r[0] is not None]
print(f"{fault}: {len(rows)} trials in {out}")
print("unavailable_ms per trial:", ", ".join("-" if r[0] is None else str(round(r[0])) for r in rows))
print("failed calls per trial:", ", ".join(f"{r[1]}/{r[2]}" for r in rows))
print("history check per trial:", ", ".join(r[3] for r in rows))
print("failed calls sent after the window (ms after it) per trial:",
      "; ".join(",".join(map(str, r[4])) or "none" for r in rows))
if ms:
    print(f"median {statistics.median(ms):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms")
PY
