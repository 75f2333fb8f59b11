#!/usr/bin/env bash
# Installs nutshell, the reference Cashu mint, into .venv for the test suite (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 (>= 3.10, with venv) is required to run the Cashu mint for tests: install python3 and python3-venv" >&2
  exit 1
fi
if [ -x .venv/bin/mint ] && .venv/bin/python -c 'import cashu' 2>/dev/null; then exit 0; fi
python3 -m venv .venv
# nutshell 0.20.2 breaks with marshmallow 4 and limits 4+ (imported through environs and slowapi).
.venv/bin/pip install --quiet --disable-pip-version-check 'cashu==0.20.2' 'marshmallow<4' 'limits<4'
