#!/usr/bin/env bash
# Builds nostr-rs-relay 0.8.12 (crates.io), a relay nobody here wrote, for the test suite, once per
# machine: it lands in cargo's own bin folder, outside the checkout, so a fresh clone (CI) finds it.
# 15 to 25 minutes on 2 cores the first time; a no-op afterwards.
set -euo pipefail
TOOL=nostr-rs-relay
VERSION=0.8.12
. "$(dirname "$0")/cargo-build-once.sh"
echo "building nostr-rs-relay $VERSION with cargo (15 to 25 minutes on 2 cores the first time)" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The published lock file pins time 0.3.25, which no longer compiles with current Rust
# (E0282 in format_description): fetch the crate's source, move only `time` forward, build it locked.
mkdir -p "$work/fetch/src"
printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nnostr-rs-relay = "=%s"\n' "$VERSION" >"$work/fetch/Cargo.toml"
touch "$work/fetch/src/lib.rs"
(cd "$work/fetch" && cargo fetch --quiet)
crate="$(ls "$CARGO_ROOT"/registry/cache/*/nostr-rs-relay-$VERSION.crate | head -1)"
tar -xzf "$crate" -C "$work"
cd "$work/nostr-rs-relay-$VERSION"
cargo update --quiet -p time@0.3.25 --precise 0.3.36
cargo install --quiet --locked --path . --root "$CARGO_ROOT"
"$CARGO_BIN/nostr-rs-relay" --version
