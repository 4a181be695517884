#!/usr/bin/env bash
# Set up the project on a fresh Debian machine with Python 3.11 and run the main job or the tests.
#
#   bash deploy/quickstart.sh demo [coadd demo options]   # install, then run the demo pipeline
#   bash deploy/quickstart.sh test [pytest options]       # install, start test services, run all tests
#
# Everything lands in ./.venv; reruns skip the install when nothing changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-}"
shift || true
case "$MODE" in
  demo|test) ;;
  *) echo "usage: bash deploy/quickstart.sh demo|test [options]" >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

PYTHON="$(find_python)" || { echo "quickstart: Python >= 3.11 is required" >&2; exit 1; }

# Debian splits venv/ensurepip out of the interpreter package.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "quickstart: installing python3-venv" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

EXTRAS="test,bench"
STAMP=".venv/.installed-$( (cat pyproject.toml constraints.txt; echo "$EXTRAS") | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "quickstart: installing pinned dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade "pip>=23" >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$STAMP"
fi

if [ "$MODE" = demo ]; then
  exec .venv/bin/coadd demo "$@"
fi

# Test services (PostgreSQL on 127.0.0.1) are installed and started by this script.
if [ -x deploy/test-services.sh ] || [ -f deploy/test-services.sh ]; then
  # shellcheck disable=SC1091
  source deploy/test-services.sh
fi
exec .venv/bin/python -m pytest -n 2 -q "$@"
