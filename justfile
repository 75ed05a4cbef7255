# Telegraft: the front door. `just --list` shows every recipe.
#
# Recipes take `key=value` arguments after their name (`just sim seeds=5000`); the same keys
# may also be set before it (`just seeds=5000 sim`).

set shell := ["bash", "-euo", "pipefail", "-c"]

seeds := "2000"
seed := ""

default:
    @just --list

# Run every test: unit, proptest, golden scripts, simulator self-tests, and 300 simulator seeds.
test:
    cargo test --workspace --all-targets
    cargo run --quiet --bin raft-sim -- --seeds 300

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

# Check formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
