#!/usr/bin/env bash
# What security costs: scenarios/secure.yaml run four ways, one after the other in one session
# (rotating which goes first each round, so the machine's drift hits all alike): the bare
# cluster (plaintext, open API), TLS alone, authentication alone, and both. Then a table of
# each run and the medians per variant:
#   scripts/security-cost.sh REPLICAS RATE ROUNDS [SECONDS]
# Each run: RATE ops/s offered (open model), 256 users, SECONDS measured (default 20) after a
# 3 s warm-up, no objectives. Without auth there is nothing to log in to, so those variants run
# the mix without `login` (weight 1 of 101 with auth). The results stay under
# results/security-<time>/.
set -euo pipefail
replicas="${1:-3}"
rate="${2:-2000}"
rounds="${3:-2}"
seconds="${4:-20}"
for v in "$replicas" "$rate" "$rounds" "$seconds"; do
  case "$v" in
    '' | *[!0-9]*) echo "security-cost: REPLICAS, RATE, ROUNDS and SECONDS are numbers, not '$v'" >&2; exit 2 ;;
  esac
done
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
out="results/security-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
variants=(plain tls auth both)
flags() {
  case "$1" in
    plain) echo "--set security.tls=false --set security.auth=false --set mix.login=0" ;;
    tls) echo "--set security.tls=true --set security.auth=false --set mix.login=0" ;;
    auth) echo "--set security.tls=false --set security.auth=true" ;;
    both) echo "--set security.tls=true --set security.auth=true" ;;
  esac
}
for i in $(seq 1 "$rounds"); do
  for k in 0 1 2 3; do
    v="${variants[$(( (k + i - 1) % 4 ))]}"
    # shellcheck disable=SC2046
    "$loadgen" bench --scenario scenarios/secure.yaml --replicas "$replicas" --no-report \
      --results "$out/$v-$i" $(flags "$v") --set "load.rate=$rate" \
      --set load.users=256 --set "load.duration=${seconds}s" --set load.warmup=3s \
      --set 'slo={}' >"$out/$v-$i.log" 2>&1 \
      || echo "$v, round $i: loadgen exited $? (see $out/$v-$i.log)" >&2
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
names = {"plain": "plaintext, open", "tls": "TLS", "auth": "auth tokens", "both": "TLS + auth"}
rows = {v: [] for v in names}
print(f"{'variant':16} {'round':>5} {'ops/s':>7} {'errors':>6} {'send p50':>9} {'send p99':>9} "
      f"{'get p99':>8} {'login p99':>10} {'replicas CPU %':>15} {'check':>6}")
for i in range(1, rounds + 1):
    for v in names:
        runs = sorted((out / f"{v}-{i}").glob("*/summary.json"))
        if not runs:
            print(f"{names[v]:16} {i:>5} no summary.json (see {out}/{v}-{i}.log)")
            continue
        s = json.loads(runs[-1].read_text())
        ops = s["ops"]
        thr = sum(o["throughput"] for o in ops.values())
        errors = sum(o["errors"] for o in ops.values())
        p99 = lambda op: ops.get(op, {}).get("latency_ms", {}).get("p99", 0.0)
        send50 = ops.get("send_message", {}).get("latency_ms", {}).get("p50", 0.0)
        cpu = sum(p["cpu_pct_mean"] for k, p in s.get("resources", {}).items()
                  if k.startswith("node-") and isinstance(p, dict))
        r = (thr, errors, send50, p99("send_message"), p99("get_messages"), p99("login"), cpu)
        rows[v].append(r)
        print(f"{names[v]:16} {i:>5} {r[0]:>7.0f} {r[1]:>6} {r[2]:>9.2f} {r[3]:>9.2f} {r[4]:>8.2f} "
              f"{r[5]:>10.2f} {r[6]:>15.0f} {s['check']['verdict']:>6}")
print()
for v in names:
    if rows[v]:
        m = [statistics.median(c) for c in zip(*rows[v])]
        print(f"median, {names[v]:16}: {m[0]:.0f} ops/s, send p50 {m[2]:.2f} ms, send p99 {m[3]:.2f} ms, "
              f"get p99 {m[4]:.2f} ms, login p99 {m[5]:.2f} ms, replicas' CPU {m[6]:.0f}%")
print(f"runs: {out}")
PY
