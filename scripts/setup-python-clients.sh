#!/usr/bin/env bash
# Installs the official `openai` and `anthropic` Python packages into their own venv, .test-data/venv-clients, so the
# suite can drive the gateway from Python as a client would (idempotent). Not nutshell's .venv:
# openai needs h11 0.16, and nutshell pins h11 below 0.15.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.test-data/venv-clients
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 (>= 3.9, with venv) is required for the Python client test: install python3 and python3-venv" >&2
  exit 1
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai, anthropic' 2>/dev/null; then exit 0; fi
echo "installing the openai and anthropic Python packages into $VENV" >&2
mkdir -p .test-data
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'openai==3.52.0' 'anthropic==2.15.0'
