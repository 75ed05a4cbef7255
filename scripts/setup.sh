#!/usr/bin/env bash
# Installs what `just test` needs beyond Rust and cargo, when it is missing, so that a newcomer's
# `just test` and CI's `.ci/run` work on a fresh Debian machine:
#   - chromium: the report test renders a run page in headless Chromium (Debian's package).
# Everything comes from Debian's package manager. As root it installs directly; otherwise it
# uses sudo when there is one, and stops with the command to run when there is not.
set -euo pipefail

have_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

if have_chromium; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "setup: the report test needs headless Chromium, and this user cannot install it." >&2
    echo "setup: run 'sudo apt-get install -y chromium' (Debian/Ubuntu), then 'just test' again." >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: the report test needs headless Chromium; install the 'chromium' package" \
    "with this system's package manager, then run 'just test' again." >&2
  exit 1
fi
echo "setup: installing chromium (Debian's package) for the report test"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
have_chromium || { echo "setup: chromium did not install" >&2; exit 1; }
