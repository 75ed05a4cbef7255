#!/usr/bin/env bash
# Installs what building and testing need beyond Rust and cargo, when it is missing, so that a
# newcomer's `just bench` and `just test` and CI's `.ci/run` work on a fresh Debian machine.
#
# Usage: scripts/setup.sh [protoc] [chromium] [etcd] [image]   (no argument: all, for `just test`)
#   - protoc: Debian's protobuf-compiler. The etcd-client crate (loadgen's `system: etcd`)
#     compiles etcd's .proto files with it when it builds.
#   - chromium: the report test renders a run page in headless Chromium.
#   - etcd: Debian's etcd-server, for `system: etcd` runs and their end-to-end test.
#   - image: what `scripts/image.sh` copies or runs beyond the build: the CA bundle
#     (ca-certificates; Goose's HTTP client needs roots to be built) and strip (binutils).
#   - k8s: Python's venv module (python3-venv on Debian's own Python), for
#     `scripts/validate-k8s.sh`, which installs kubernetes-validate from PyPI into a venv.
# Everything comes from Debian's package manager. As root it installs directly; otherwise it
# uses sudo when there is one, and stops with the command to run when there is not.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(protoc chromium etcd image k8s)

missing=()
for w in "${wanted[@]}"; do
  case "$w" in
    protoc)
      command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler libprotobuf-dev) ;;
    chromium)
      if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
        missing+=(chromium)
      fi ;;
    etcd)
      command -v etcd >/dev/null 2>&1 || missing+=(etcd-server) ;;
    image)
      [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
      command -v strip >/dev/null 2>&1 || missing+=(binutils) ;;
    k8s)
      python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv) ;;
    *) echo "setup: unknown component '$w' (protoc, chromium, etcd, image, k8s)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "setup: building and testing need ${missing[*]}, and this user cannot install them." >&2
    echo "setup: run 'sudo apt-get install -y ${missing[*]}' (Debian/Ubuntu), then try again." >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: install ${missing[*]} (Debian's names) with this system's package manager," \
    "then try again." >&2
  exit 1
fi
echo "setup: installing ${missing[*]} (Debian's packages)"
$SUDO apt-get update -qq
# etcd-server's package would start a system etcd on 2379 where an init system runs; the
# toolkit starts its own members on free ports, so the service is kept from starting.
policy=""
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
if [ -n "$policy" ]; then
  $SUDO rm -f "$policy"
fi
for w in "${wanted[@]}"; do
  case "$w" in
    protoc) command -v protoc >/dev/null 2>&1 || { echo "setup: protoc did not install" >&2; exit 1; } ;;
    etcd) command -v etcd >/dev/null 2>&1 || { echo "setup: etcd did not install" >&2; exit 1; } ;;
  esac
done
