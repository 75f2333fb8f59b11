#!/usr/bin/env bash
# Builds nostr-rs-relay 0.8.12 (crates.io), a relay nobody here wrote, for the test suite, once per
# machine: it lands in cargo's own bin folder, outside the checkout, so a fresh clone (CI) finds it.
# 15 to 25 minutes on 2 cores the first time; a no-op afterwards.
set -euo pipefail
VERSION=0.8.12
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -x "$CARGO_BIN/nostr-rs-relay" ] && "$CARGO_BIN/nostr-rs-relay" --version 2>/dev/null | grep -q "$VERSION"; then exit 0; fi
export PATH="$CARGO_BIN:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo (Rust) is required to build nostr-rs-relay for the tests: install it with rustup" >&2
  exit 1
fi
# Its gRPC extension points are compiled from .proto files.
if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is required to build nostr-rs-relay: apt-get install protobuf-compiler" >&2
    exit 1
  fi
fi
# Serialised: test files that start relays may run this at the same time.
exec 9>"${TMPDIR:-/tmp}/setup-nostr-rs-relay.lock"
flock 9
if [ -x "$CARGO_BIN/nostr-rs-relay" ] && "$CARGO_BIN/nostr-rs-relay" --version 2>/dev/null | grep -q "$VERSION"; then exit 0; fi
echo "building nostr-rs-relay $VERSION with cargo (15 to 25 minutes on 2 cores the first time)" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The published lock file pins time 0.3.25, which no longer compiles with current Rust
# (E0282 in format_description): fetch the crate's source, move only `time` forward, build it locked.
mkdir -p "$work/fetch/src"
printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nnostr-rs-relay = "=%s"\n' "$VERSION" >"$work/fetch/Cargo.toml"
touch "$work/fetch/src/lib.rs"
(cd "$work/fetch" && cargo fetch --quiet)
crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/nostr-rs-relay-$VERSION.crate | head -1)"
tar -xzf "$crate" -C "$work"
cd "$work/nostr-rs-relay-$VERSION"
cargo update --quiet -p time@0.3.25 --precise 0.3.36
cargo install --quiet --locked --path . --root "${CARGO_HOME:-$HOME/.cargo}"
"$CARGO_BIN/nostr-rs-relay" --version
