#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are installed (Debian's package) and prints their folder.
set -euo pipefail
find_bin() {
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
  done
  return 1
}
if ! find_bin >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from Debian's packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "PostgreSQL server binaries not found: install Debian's postgresql package, or set TEST_POSTGRES_URL" >&2
    exit 1
  fi
fi
find_bin
