#!/usr/bin/env bash
# Installs nostr-relay (PyPI), a real Nostr relay, into .venv-relay for the test suite (idempotent).
# Its own venv: its dependencies (websockets, uvicorn) conflict with nutshell's.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 (>= 3.10, with venv) is required to run the Nostr relay for tests: install python3 and python3-venv" >&2
  exit 1
fi
if [ -x .venv-relay/bin/nostr-relay ]; then exit 0; fi
python3 -m venv .venv-relay
# Pinned to the set the tests were written against (scripts/relay-constraints.txt).
.venv-relay/bin/pip install --quiet --disable-pip-version-check -c scripts/relay-constraints.txt 'nostr-relay==1.14'
