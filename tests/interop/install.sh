#!/usr/bin/env bash
# Installs the interop peers (tests/interop.rs) into this directory, nowhere else:
# PyJWT + cryptography (pinned in requirements.txt, wheels only) into .pydeps, and jose
# (pinned in package-lock.json) into node_modules. Idempotent and quick: each part is
# reinstalled only when its pin file changed since the last successful install (a stamp holds
# the pin file's hash). Needs python3 with pip, node and npm, and the two registries.
set -euo pipefail
cd "$(dirname "$0")"

# Two test processes may call this at once: one installs, the other waits.
exec 9>.install.lock
flock 9

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$(sha256sum "$2" | cut -d' ' -f1)" ]; }
stamp() { sha256sum "$2" | cut -d' ' -f1 >"$1"; }

if ! stamp_ok .pydeps/.stamp requirements.txt; then
  rm -rf .pydeps
  python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
    --only-binary :all: --no-deps --target .pydeps -r requirements.txt
  stamp .pydeps/.stamp requirements.txt
fi

if ! stamp_ok node_modules/.stamp package-lock.json; then
  npm ci --silent --no-audit --no-fund --ignore-scripts
  stamp node_modules/.stamp package-lock.json
fi
