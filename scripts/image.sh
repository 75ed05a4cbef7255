#!/usr/bin/env bash
# Builds the container images offline, from what is on this machine (no image is pulled):
#   telegraft:latest       telegraft and loadgen from the release build (deploy/image/Dockerfile)
#   telegraft-etcd:latest  Debian's etcd-server binary (deploy/image/etcd.Dockerfile)
#
# Usage: scripts/image.sh [telegraft] [etcd]   (no argument: both)
#
# Each image is FROM scratch: the binaries, the shared libraries `ldd` lists for them, a
# passwd/group naming uid 10001, and an nsswitch.conf, packed into rootfs.tar with numeric
# ownership (root everywhere, 10001 for /data, /results and /tmp) and ADDed. The release
# binaries must be built first (`just image` does); $CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(telegraft etcd)

if ! docker version >/dev/null 2>&1; then
  echo "image: no Docker Engine is reachable (docker version failed)" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
# Where telegraft and loadgen are: the release build, or $TELEGRAFT_BIN_DIR (the tests pass
# the folder of the binaries under test).
bin_dir="${TELEGRAFT_BIN_DIR:-$target_dir/release}"
version="$(git describe --always --dirty 2>/dev/null || echo unknown)"

# build NAME DOCKERFILE BINARY...: a root filesystem of the binaries (in /usr/local/bin) and
# their shared libraries, then `docker build` over it.
build() {
  local name="$1" dockerfile="$2"
  shift 2
  local stage
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' RETURN
  mkdir -p "$stage/root/usr/local/bin" "$stage/root/etc" "$stage/own/data" "$stage/own/results" \
    "$stage/own/tmp"
  local bin lib
  for bin in "$@"; do
    [ -x "$bin" ] || { echo "image: $bin is missing: build it first" >&2; return 1; }
    cp "$bin" "$stage/root/usr/local/bin/"
    # The release profile keeps debug info for profiling; the image does not need it.
    command -v strip >/dev/null && strip --strip-debug "$stage/root/usr/local/bin/$(basename "$bin")"
    # Every library the dynamic linker would load, and the linker itself, at the same path.
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$stage/root$(dirname "$lib")"
      cp -L "$lib" "$stage/root$lib"
    done
  done
  printf 'root:x:0:0:root:/:/nonexistent\ntelegraft:x:10001:10001:telegraft:/data:/nonexistent\n' \
    >"$stage/root/etc/passwd"
  printf 'root:x:0:\ntelegraft:x:10001:\n' >"$stage/root/etc/group"
  # Names through /etc/hosts, then DNS (Docker's embedded resolver, or the cluster's).
  printf 'hosts: files dns\n' >"$stage/root/etc/nsswitch.conf"
  if [ "$name" = telegraft ]; then
    mkdir -p "$stage/root/scenarios"
    cp scenarios/*.yaml "$stage/root/scenarios/"
    # Goose's HTTP client (reqwest with rustls) loads the platform's root certificates when it
    # is built, and fails without any, although loadgen speaks no HTTPS: the host's bundle
    # (Debian's ca-certificates) goes in.
    bundle=/etc/ssl/certs/ca-certificates.crt
    [ -f "$bundle" ] || { echo "image: no $bundle (Debian: apt-get install ca-certificates)" >&2; return 1; }
    mkdir -p "$stage/root/etc/ssl/certs"
    cp "$bundle" "$stage/root/etc/ssl/certs/"
  fi
  chmod 1777 "$stage/own/tmp"
  tar -cf "$stage/rootfs.tar" --numeric-owner --owner=0 --group=0 -C "$stage/root" .
  tar -rf "$stage/rootfs.tar" --numeric-owner --owner=10001 --group=10001 -C "$stage/own" \
    data results tmp
  cp "$dockerfile" "$stage/Dockerfile"
  # The legacy builder is enough (and is what an engine without buildx has); its notices are
  # shown only when the build fails.
  local out
  if ! out="$(DOCKER_BUILDKIT=0 docker build --quiet \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.version=$version" \
    -t "$name:latest" -t "$name:$version" "$stage" 2>&1)"; then
    echo "$out" >&2
    return 1
  fi
  docker image inspect "$name:latest" >/dev/null
  echo "image: $name:latest ($(docker image inspect -f '{{.Size}}' "$name:latest" | awk '{printf "%.0f MB", $1/1e6}'))"
}

for w in "${wanted[@]}"; do
  case "$w" in
    telegraft)
      build telegraft deploy/image/Dockerfile "$bin_dir/telegraft" "$bin_dir/loadgen" ;;
    etcd)
      etcd="${ETCD:-$(command -v etcd || true)}"
      [ -n "$etcd" ] || { echo "image: no etcd binary: run scripts/setup.sh etcd" >&2; exit 1; }
      build telegraft-etcd deploy/image/etcd.Dockerfile "$etcd" ;;
    *) echo "image: unknown image '$w' (telegraft, etcd)" >&2; exit 2 ;;
  esac
done
