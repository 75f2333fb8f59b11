#!/usr/bin/env bash
# Builds cdk-mintd (crates.io: the Cashu Development Kit's mint) for the test suite, once per machine:
# a second mint implementation, written in Rust by others, that serves NUT-02 v2 keyset ids.
# Only the fake Lightning backend and SQLite are compiled in (no CLN/LND/LDK/BDK/gRPC). 10 to 30
# minutes on 2 cores the first time (27 measured beside another cargo build), a no-op afterwards;
# it lands in cargo's own bin folder, outside the checkout, so a fresh clone (CI) finds it.
set -euo pipefail
VERSION=0.18.3
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
installed() { [ -x "$CARGO_BIN/cdk-mintd" ] && "$CARGO_BIN/cdk-mintd" --version 2>/dev/null | grep -q "$VERSION"; }
if installed; then exit 0; fi
export PATH="$CARGO_BIN:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo (Rust) is required to build cdk-mintd for the tests: install it with rustup" >&2
  exit 1
fi
# Some of its dependencies compile .proto files even without the gRPC features.
if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is required to build cdk-mintd: apt-get install protobuf-compiler" >&2
    exit 1
  fi
fi
# Serialised: test files that start this mint may run this at the same time.
exec 9>"${TMPDIR:-/tmp}/setup-cdk-mintd.lock"
flock 9
if installed; then exit 0; fi
echo "building cdk-mintd $VERSION with cargo (10 to 30 minutes on 2 cores the first time)" >&2
cargo install --quiet --locked --no-default-features --features fakewallet,sqlite \
  --root "${CARGO_HOME:-$HOME/.cargo}" cdk-mintd --version "=$VERSION"
"$CARGO_BIN/cdk-mintd" --version
