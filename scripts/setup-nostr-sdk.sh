#!/usr/bin/env bash
# Installs rust-nostr's Python bindings (PyPI nostr-sdk: a client and a local relay builder that can
# demand NIP-42 AUTH and NIP-13 proof of work) into .venv-nostr-sdk for the test suite (idempotent).
# A wheel with the compiled library inside: seconds, nothing is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-nostr-sdk
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 (>= 3.9, with venv) is required for the rust-nostr relay and client in the tests: install python3 and python3-venv" >&2
  exit 1
fi
exec 9>"${TMPDIR:-/tmp}/setup-nostr-sdk.lock"
flock 9
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import nostr_sdk' 2>/dev/null; then exit 0; fi
echo "installing nostr-sdk (rust-nostr) into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'nostr-sdk==0.45.1'
