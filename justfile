# Telegraft: the front door. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Seeds for `just sim` (the deep run); `just test` runs a smaller, fixed sweep.
seeds := "2000"
seed := ""

default:
    @just --list

# Run every test: unit, proptest, golden scripts, and a few hundred simulator seeds.
test:
    cargo test --workspace --all-targets
    cargo run --quiet --bin raft-sim -- --seeds 300

# Run the Raft simulator: `just sim seeds=5000`, or replay one seed with `just sim seed=S`.
sim:
    cargo build --release --bin raft-sim
    if [ -n "{{seed}}" ]; then \
      ./target/release/raft-sim --seed {{seed}} --trace; \
    else \
      ./target/release/raft-sim --seeds {{seeds}}; \
    fi

# Check formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
