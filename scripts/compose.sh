#!/usr/bin/env bash
# Runs Docker Compose with deploy/compose.yaml, whichever Compose this machine has: the
# `docker compose` plugin, or the standalone `docker-compose` (Debian's package).
#
# Usage: scripts/compose.sh up REPLICAS | down | ARGS...   (project `telegraft`, or $TG_PROJECT)
#   up N:  starts replicas telegraft-0 ... telegraft-<N-1> from telegraft:latest (`just up`
#          builds it first when it is missing), waits until one leads, prints the endpoints.
#          Every replica serves TLS: `up` makes the cluster's certificates first (`telegraft
#          certs`, into $TG_CERTS, by default ~/.cache/telegraft/compose-<project>), naming
#          every slot's host name and address.
#          A cluster the project already runs is taken down first, volumes and all: its
#          replicas would keep peers of another size, so `up` always starts a fresh one.
#   down:  stops and removes the project's containers, network and volumes.
#   ARGS:  passed to compose as they are (`scripts/compose.sh ps`, `logs telegraft-0`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker version >/dev/null 2>&1; then
  echo "compose: no Docker Engine is reachable (docker version failed)" >&2
  exit 1
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "compose: neither 'docker compose' nor 'docker-compose' is installed" \
    "(Debian: apt-get install docker-compose)" >&2
  exit 1
fi
# TG_PROJECT and TG_SUBNET pick another project and /24 (the tests use their own, beside a
# user's `just up` cluster).
project="${TG_PROJECT:-telegraft}"
file=deploy/compose.yaml
subnet="${TG_SUBNET:-172.28.5}"
# The certificate directory the replicas mount at /certs (the compose file needs it set).
# Without TG_CERTS, `up` makes a fresh one each time; a TG_CERTS that already holds ca.pem is
# used as it is (your own certificates), and one without is filled.
own_certs="${TG_CERTS:+yes}"
export TG_CERTS="${TG_CERTS:-${XDG_CACHE_HOME:-$HOME/.cache}/telegraft/compose-$project}"

# A fresh CA and certificates for the 7 slots, readable by the image's uid 10001 through the
# bind mount: as root the files are given to it; otherwise the keys are made readable by all
# (a local test cluster's keys: nothing else lets another uid read them).
make_certs() {
  local telegraft="${CARGO_TARGET_DIR:-target}/release/telegraft" hosts=""
  if [ ! -x "$telegraft" ]; then
    echo "compose: $telegraft is missing: build first (just image, or just up, builds it)" >&2
    exit 1
  fi
  if [ -n "$own_certs" ] && [ -f "$TG_CERTS/ca.pem" ]; then
    echo "compose: using the certificates in $TG_CERTS"
    return
  fi
  for i in 0 1 2 3 4 5 6; do hosts+="${hosts:+,}telegraft-$i,$subnet.$((10 + i))"; done
  [ -z "$own_certs" ] && rm -rf "$TG_CERTS"
  "$telegraft" certs --out "$TG_CERTS" --nodes 7 --hosts "$hosts" >/dev/null
  if [ "$(id -u)" = 0 ]; then
    chown -R 10001:10001 "$TG_CERTS"
  else
    chmod 0644 "$TG_CERTS"/*.key
  fi
}

case "${1:-}" in
  up)
    n="${2:-3}"
    if ! [[ "$n" =~ ^[1-7]$ ]]; then
      echo "compose: replicas must be 1 to 7 (deploy/compose.yaml has 7 slots), not '$n'" >&2
      exit 2
    fi
    peers=""
    endpoints=""
    for i in $(seq 0 $((n - 1))); do
      peers+="${peers:+,}$((i + 1))=telegraft-$i:7001"
      endpoints+="${endpoints:+,}$subnet.$((10 + i)):7001"
    done
    export TG_PEERS="$peers" TG_SUBNET="$subnet" TG_PROJECT="$project"
    # A cluster of another size may still be up: its containers would keep the old peers.
    "${compose[@]}" -p "$project" -f "$file" --profile r7 --profile load down -v --remove-orphans \
      >/dev/null 2>&1 || true
    make_certs
    COMPOSE_PROFILES="r$n" "${compose[@]}" -p "$project" -f "$file" up -d
    echo "compose: waiting for a leader"
    for _ in $(seq 1 60); do
      if docker exec "$project-0" telegraft status --json --tls-dir /certs \
        --endpoints "${peers//[0-9]=/}" 2>/dev/null | grep -q '"role": "leader"'; then
        docker exec "$project-0" telegraft status --tls-dir /certs --endpoints "${peers//[0-9]=/}"
        echo "compose: $n replicas up (TLS); from this host:" \
          "telegraft status --endpoints $endpoints --tls-dir $TG_CERTS"
        echo "compose: load: loadgen bench --target $endpoints --tls-dir $TG_CERTS, or" \
          "scripts/compose.sh run --rm loadgen bench --scenario /scenarios/chat.yaml" \
          "--target ${peers//[0-9]=/} --tls-dir /certs"
        exit 0
      fi
      sleep 1
    done
    echo "compose: no leader after 60 s; logs: scripts/compose.sh logs" >&2
    exit 1
    ;;
  down)
    TG_PROJECT="$project" TG_SUBNET="$subnet" \
      "${compose[@]}" -p "$project" -f "$file" --profile r7 --profile load down -v --remove-orphans
    ;;
  *)
    "${compose[@]}" -p "$project" -f "$file" "$@"
    ;;
esac
