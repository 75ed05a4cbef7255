# Telegraft: the front door. `just --list` shows every recipe.
#
# Recipes take `key=value` arguments after their name (`just sim seeds=5000`); the same keys
# may also be set before it (`just seeds=5000 sim`).

set shell := ["bash", "-euo", "pipefail", "-c"]

seeds := "2000"
# Every recipe builds with this one command: the same targets and so the same feature set as
# `cargo test` in `just test`, so that no recipe rebuilds the dependencies another one built
# (building one binary alone resolves the dependencies' features anew and rebuilds them).
build := "cargo build --quiet --release --workspace --all-targets"
seed := ""

default:
    @just --list

# Ends with one line counting every test (the 300-seed simulator sweep counts as one).
# Tests build in the release profile, like `just bench`, so a newcomer's first two commands
# compile the dependencies once. The container tests build the image from this build and start
# compose clusters (they skip where no Docker Engine is reachable); the Kubernetes manifests are
# validated offline first. `scripts/setup.sh` first installs what is missing of protoc (the
# etcd-client crate's build needs it), Chromium (the report test) and etcd (the etcd test).
# Run every test: unit, proptest, golden scripts, simulator, real replicas, load generator.
test:
    #!/usr/bin/env bash
    set -euo pipefail
    bash scripts/setup.sh
    # The Kubernetes manifests, against the Kubernetes schemas, offline (deploy/README.md).
    bash scripts/validate-k8s.sh
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    cargo test --release --workspace --all-targets 2>&1 | tee "$log"
    cargo run --quiet --release --bin raft-sim -- --seeds 300
    passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
    failed=$(grep -Eo '^test result: .*; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
    echo "tests: $((passed + 1)) passed, $failed failed"

# Install what building and the tests need beyond Rust (protoc, Chromium, etcd), when it is missing.
setup:
    bash scripts/setup.sh

# Run the Raft simulator: `just sim seeds=5000`, or replay one seed with its trace: `just sim seed=S`.
sim *args:
    #!/usr/bin/env bash
    set -euo pipefail
    seeds="{{seeds}}"; seed="{{seed}}"
    for a in {{args}}; do
      case "$a" in
        seeds=*) seeds="${a#seeds=}" ;;
        seed=*) seed="${a#seed=}" ;;
        *) echo "just sim: unknown argument '$a' (expected seeds=N or seed=S)" >&2; exit 2 ;;
      esac
    done
    if [ -n "$seed" ]; then
      cargo run --quiet --release --bin raft-sim -- --seed "$seed" --trace
    else
      cargo run --quiet --release --bin raft-sim -- --seeds "$seeds"
    fi

# Start a local cluster on loopback (Ctrl-C stops it): `just cluster replicas=5`.
cluster *args:
    #!/usr/bin/env bash
    set -euo pipefail
    replicas=3; base_port=7001; data_dir=data
    for a in {{args}}; do
      case "$a" in
        replicas=*) replicas="${a#replicas=}" ;;
        base_port=*) base_port="${a#base_port=}" ;;
        data_dir=*) data_dir="${a#data_dir=}" ;;
        *) echo "just cluster: unknown argument '$a' (replicas=N base_port=P data_dir=DIR)" >&2; exit 2 ;;
      esac
    done
    {{build}}
    "${CARGO_TARGET_DIR:-target}/release/telegraft" cluster --replicas "$replicas" --base-port "$base_port" --data-dir "$data_dir"

# Storage and cluster micro-benchmarks (fsync, group commit, SendMessage): `just microbench seconds=10`.
microbench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    seconds=5; replicas=3
    for a in {{args}}; do
      case "$a" in
        seconds=*) seconds="${a#seconds=}" ;;
        replicas=*) replicas="${a#replicas=}" ;;
        *) echo "just microbench: unknown argument '$a' (seconds=N replicas=N)" >&2; exit 2 ;;
      esac
    done
    {{build}}
    bench="${CARGO_TARGET_DIR:-target}/release/telegraft-bench"
    dir="$(mktemp -d "${TMPDIR:-/var/tmp}/telegraft-bench.XXXXXX")"
    "$bench" --dir "$dir/fsync" --seconds "$seconds" fsync
    "$bench" --dir "$dir/log" --seconds "$seconds" log --writers 1,16,256
    "$bench" --dir "$dir/cluster" --seconds "$seconds" cluster --replicas "$replicas" --clients 1,64,256
    rm -rf "$dir"

# Write throughput side by side with etcd (installs Debian's etcd-server when missing): `just compare-etcd replicas=3`.
compare-etcd *args:
    #!/usr/bin/env bash
    set -euo pipefail
    replicas=3; seconds=30
    for a in {{args}}; do
      case "$a" in
        replicas=*) replicas="${a#replicas=}" ;;
        seconds=*) seconds="${a#seconds=}" ;;
        *) echo "just compare-etcd: unknown argument '$a' (replicas=N seconds=N)" >&2; exit 2 ;;
      esac
    done
    {{build}}
    bash scripts/compare-etcd.sh "$replicas" "$seconds"

# Any `path.to.field=value` argument overrides that scenario field; `junit=FILE` also writes the verdicts as JUnit XML.
# Exits like loadgen: 0 all met, 1 run failed, 2 bad input, 3 objective missed, 4 anomaly, 5 check incomplete, 130 interrupted.
# Run a scenario on a fresh local cluster, write results/<run-id>/: `just bench replicas=5 scenario=scenarios/chat.yaml load.rate=800`.
bench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    scenario=scenarios/chat.yaml
    extra=()
    for a in {{args}}; do
      case "$a" in
        replicas=*) extra+=(--replicas "${a#replicas=}") ;;
        scenario=*) scenario="${a#scenario=}" ;;
        target=*) extra+=(--target "${a#target=}") ;;
        target_metrics=*) extra+=(--target-metrics "${a#target_metrics=}") ;;
        tls_dir=*) extra+=(--tls-dir "${a#tls_dir=}") ;;
        results=*) extra+=(--results "${a#results=}") ;;
        junit=*) extra+=(--junit "${a#junit=}") ;;
        system=*) extra+=(--set "$a"); [ "${a#system=}" != etcd ] || bash scripts/setup.sh etcd ;;
        deploy=*) extra+=(--deploy "${a#deploy=}"); deploy="${a#deploy=}" ;;
        workers=*) extra+=(--workers "${a#workers=}") ;;
        *.*=*) extra+=(--set "$a") ;;
        *) echo "just bench: unknown argument '$a' (replicas=N scenario=FILE system=telegraft|etcd deploy=local|docker workers=N target=A,B,C target_metrics=M,N,O tls_dir=DIR results=DIR junit=FILE field.path=VALUE)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc
    {{build}}
    # Containers run this build: the images are rebuilt from it (a few seconds).
    if [ "${deploy:-local}" = docker ]; then
      bash scripts/setup.sh image
      bash scripts/image.sh telegraft $([[ " ${extra[*]} " == *" system=etcd "* ]] && echo etcd)
    fi
    "${CARGO_TARGET_DIR:-target}/release/loadgen" bench --scenario "$scenario" "${extra[@]}"

# Probes are short open-model runs of the scenario (defaults: 2 s warm-up, 10 s measured, 5% precision); any `path.to.field=value` overrides a scenario field.
# Find the highest rate each replica count sustains: `just capacity replicas="1 3 5"` (writes results/<run>/capacity.json and a capacity page).
capacity *args:
    #!/usr/bin/env bash
    set -euo pipefail
    scenario=scenarios/chat.yaml
    replicas=""
    extra=()
    for a in {{args}}; do
      case "$a" in
        scenario=*) scenario="${a#scenario=}" ;;
        replicas=*) replicas="${a#replicas=}" ;;
        [0-9]*) replicas="$replicas $a" ;;
        probe=*) extra+=(--probe "${a#probe=}") ;;
        warmup=*) extra+=(--probe-warmup "${a#warmup=}") ;;
        settle=*) extra+=(--settle "${a#settle=}") ;;
        precision=*) extra+=(--precision "${a#precision=}") ;;
        start_rate=*) extra+=(--start-rate "${a#start_rate=}") ;;
        max_rate=*) extra+=(--max-rate "${a#max_rate=}") ;;
        target=*) extra+=(--target "${a#target=}") ;;
        results=*) extra+=(--results "${a#results=}") ;;
        system=*) extra+=(--set "$a"); [ "${a#system=}" != etcd ] || bash scripts/setup.sh etcd ;;
        *.*=*) extra+=(--set "$a") ;;
        *) echo "just capacity: unknown argument '$a' (scenario=FILE system=telegraft|etcd replicas=\"1 3 5\" probe=10s warmup=2s settle=3s precision=5% start_rate=N max_rate=N target=A,B,C results=DIR field.path=VALUE)" >&2; exit 2 ;;
      esac
    done
    if [ -n "$replicas" ]; then
      extra+=(--replicas $replicas)
    fi
    bash scripts/setup.sh protoc
    {{build}}
    "${CARGO_TARGET_DIR:-target}/release/loadgen" capacity --scenario "$scenario" "${extra[@]}"

# Exits 6 on a regression beyond both the tolerance and the runs' per-second noise, so CI can gate on it.
# Compare two runs: `just compare results/<base> results/<new> tolerance=p99=10%,throughput=5%` (prints the table; writes compare.json and compare.html).
compare base new *args:
    #!/usr/bin/env bash
    set -euo pipefail
    extra=()
    for a in {{args}}; do
      case "$a" in
        tolerance=*) extra+=(--tolerance "${a#tolerance=}") ;;
        out=*) extra+=(--out "${a#out=}") ;;
        *) echo "just compare: unknown argument '$a' (tolerance=p99=10%,throughput=5% out=DIR)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc
    {{build}}
    "${CARGO_TARGET_DIR:-target}/release/loadgen" compare "{{base}}" "{{new}}" "${extra[@]}"

# Write HTML reports from results folders (default: all of results/): `just report`.
report *args:
    bash scripts/setup.sh protoc
    {{build}}
    "${CARGO_TARGET_DIR:-target}/release/loadgen" report {{args}}

# Any `path.to.field=value` overrides that scenario field; `vary=FIELD values="A B"` also runs once per value, each value its own line on the index. An SLO miss does not stop the sweep.
# Run a scenario once per system, replica count (and value), then the reports: `just sweep replicas="1 3 5"`, `just sweep system="telegraft etcd" replicas="1 3 5"`, `just sweep vary=cluster.batching values="on off" replicas="1 3 5"`.
sweep *args:
    #!/usr/bin/env bash
    set -euo pipefail
    scenario=scenarios/chat.yaml
    replicas=""
    vary=""
    values=""
    systems=telegraft
    sets=()
    last=""
    # just splits a quoted list (replicas="1 3 5") into words: a bare word belongs to the
    # last key given.
    for a in {{args}}; do
      case "$a" in
        scenario=*) scenario="${a#scenario=}"; last="" ;;
        replicas=*) replicas="${a#replicas=}"; last=replicas ;;
        vary=*) vary="${a#vary=}"; last="" ;;
        values=*) values="${a#values=}"; last=values ;;
        system=*) systems="${a#system=}"; last=systems ;;
        *.*=*|*=*) sets+=(--set "$a"); last="" ;;
        *)
          case "$last" in
            replicas) replicas="$replicas $a" ;;
            values) values="$values $a" ;;
            systems) systems="$systems $a" ;;
            *) echo "just sweep: unknown argument '$a' (scenario=FILE replicas=\"1 3 5\" system=\"telegraft etcd\" vary=FIELD values=\"A B\" field.path=VALUE)" >&2; exit 2 ;;
          esac ;;
      esac
    done
    [ -n "$replicas" ] || replicas="1 3 5 7"
    if [ -n "$vary" ] && [ -z "$values" ]; then echo "just sweep: vary=$vary needs values=\"A B ...\"" >&2; exit 2; fi
    if [ -z "$vary" ] && [ -n "$values" ]; then echo "just sweep: values= needs vary=FIELD" >&2; exit 2; fi
    bash scripts/setup.sh protoc
    {{build}}
    bin="${CARGO_TARGET_DIR:-target}/release/loadgen"
    # The scenario's name, which the index draws one line per.
    name=$("$bin" validate "$scenario" "${sets[@]}" | sed -E 's/^.*: ok \((.*), [0-9]+ replicas\)$/\1/')
    vals=($values)
    [ "${#vals[@]}" -gt 0 ] || vals=("")
    for sys in $systems; do
      [ "$sys" != etcd ] || bash scripts/setup.sh etcd
      "$bin" validate "$scenario" "${sets[@]}" --set "system=$sys" >/dev/null
    done
    for sys in $systems; do
    for v in "${vals[@]}"; do
      extra=(--set "system=$sys")
      label=" on $sys"
      if [ -n "$vary" ]; then
        extra+=(--set "$vary=$v" --set "name=$name $vary=$v")
        label="$label ($vary=$v)"
        "$bin" validate "$scenario" "${sets[@]}" "${extra[@]}" >/dev/null
      fi
      for n in $replicas; do
        echo "== $scenario$label with $n replicas"
        status=0
        "$bin" bench --scenario "$scenario" --replicas "$n" --no-report "${sets[@]}" "${extra[@]}" || status=$?
        if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
      done
    done
    done
    "$bin" report
    echo "open reports/index.html: the scaling panel compares the replica counts (one line per value)"

# Each trial is a fresh 3-replica cluster under scenarios/failover.yaml; prints the unavailability, failed calls and checks.
# Repeat one fault and tabulate what it costs: `just failover-trials fault=pause trials=10` (fault: kill, pause or partition; `system=etcd` for etcd).
failover-trials *args:
    #!/usr/bin/env bash
    set -euo pipefail
    fault=pause
    trials=10
    system=telegraft
    for a in {{args}}; do
      case "$a" in
        fault=*) fault="${a#fault=}" ;;
        trials=*) trials="${a#trials=}" ;;
        system=*) system="${a#system=}"; [ "$system" != etcd ] || bash scripts/setup.sh etcd ;;
        *) echo "just failover-trials: unknown argument '$a' (fault=kill|pause|partition trials=N system=telegraft|etcd)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc
    {{build}}
    bash scripts/failover-trials.sh "$fault" "$trials" "$system"

# Measure what the replicas' metrics cost: `just metrics-overhead replicas=3 rate=2000 pairs=3` alternates runs with metrics on and off.
metrics-overhead *args:
    #!/usr/bin/env bash
    set -euo pipefail
    replicas=3; rate=2000; pairs=3; seconds=15
    for a in {{args}}; do
      case "$a" in
        replicas=*) replicas="${a#replicas=}" ;;
        rate=*) rate="${a#rate=}" ;;
        pairs=*) pairs="${a#pairs=}" ;;
        seconds=*) seconds="${a#seconds=}" ;;
        *) echo "just metrics-overhead: unknown argument '$a' (replicas=N rate=R pairs=P seconds=S)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc
    {{build}}
    bash scripts/metrics-overhead.sh "$replicas" "$rate" "$pairs" "$seconds"

# Measure what security costs: `just security-cost replicas=3 rate=2000 rounds=2` runs
# scenarios/secure.yaml plaintext, with TLS, with auth tokens and with both, one after the other.
security-cost *args:
    #!/usr/bin/env bash
    set -euo pipefail
    replicas=3; rate=2000; rounds=2; seconds=20
    for a in {{args}}; do
      case "$a" in
        replicas=*) replicas="${a#replicas=}" ;;
        rate=*) rate="${a#rate=}" ;;
        rounds=*) rounds="${a#rounds=}" ;;
        seconds=*) seconds="${a#seconds=}" ;;
        *) echo "just security-cost: unknown argument '$a' (replicas=N rate=R rounds=K seconds=S)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc
    {{build}}
    bash scripts/security-cost.sh "$replicas" "$rate" "$rounds" "$seconds"

# Make a cluster CA and certificates for `telegraft node --tls-dir`: `just certs out=certs nodes=3 hosts=db1,10.0.0.5`.
certs *args:
    #!/usr/bin/env bash
    set -euo pipefail
    out=certs; nodes=3; hosts=""; cluster_id=telegraft
    for a in {{args}}; do
      case "$a" in
        out=*) out="${a#out=}" ;;
        nodes=*) nodes="${a#nodes=}" ;;
        hosts=*) hosts="${a#hosts=}" ;;
        cluster_id=*) cluster_id="${a#cluster_id=}" ;;
        *) echo "just certs: unknown argument '$a' (out=DIR nodes=N hosts=H1,H2 cluster_id=ID)" >&2; exit 2 ;;
      esac
    done
    {{build}}
    "${CARGO_TARGET_DIR:-target}/release/telegraft" certs --out "$out" --nodes "$nodes" --cluster-id "$cluster_id" ${hosts:+--hosts "$hosts"}

# Check scenario files (all of scenarios/ by default): `just validate scenarios/chat.yaml --set load.rate=800`.
validate *args:
    cargo run --quiet --release --bin loadgen -- validate {{ if args == "" { "scenarios/*.yaml" } else { args } }}

# Build the container images offline (no base image is pulled): telegraft:latest (telegraft
# and loadgen) and telegraft-etcd:latest (Debian's etcd-server). See deploy/README.md.
image *args:
    #!/usr/bin/env bash
    set -euo pipefail
    images=()
    for a in {{args}}; do
      case "$a" in
        telegraft|etcd) images+=("$a") ;;
        *) echo "just image: unknown argument '$a' (telegraft, etcd; none: both)" >&2; exit 2 ;;
      esac
    done
    bash scripts/setup.sh protoc etcd image
    {{build}}
    bash scripts/image.sh "${images[@]}"

# Start a cluster in containers with Docker Compose (deploy/compose.yaml): `just up replicas=5`.
up *args:
    #!/usr/bin/env bash
    set -euo pipefail
    replicas=3
    for a in {{args}}; do
      case "$a" in
        replicas=*) replicas="${a#replicas=}" ;;
        *) echo "just up: unknown argument '$a' (replicas=N, 1 to 7)" >&2; exit 2 ;;
      esac
    done
    docker image inspect telegraft:latest >/dev/null 2>&1 || just image telegraft
    bash scripts/compose.sh up "$replicas"

# Stop the compose cluster `just up` started and remove its volumes.
down:
    bash scripts/compose.sh down


# Check formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
