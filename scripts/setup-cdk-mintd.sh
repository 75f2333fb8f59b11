#!/usr/bin/env bash
# Builds cdk-mintd (crates.io: the Cashu Development Kit's mint) for the test suite, once per machine:
# a second mint implementation, written in Rust by others, that serves NUT-02 v2 keyset ids.
# Only the fake Lightning backend and SQLite are compiled in (no CLN/LND/LDK/BDK/gRPC). 10 to 30
# minutes on 2 cores the first time (27 measured beside another cargo build), a no-op afterwards;
# it lands in cargo's own bin folder, outside the checkout, so a fresh clone (CI) finds it.
set -euo pipefail
TOOL=cdk-mintd
VERSION=0.18.3
. "$(dirname "$0")/cargo-build-once.sh"
echo "building cdk-mintd $VERSION with cargo (10 to 30 minutes on 2 cores the first time)" >&2
cargo install --quiet --locked --no-default-features --features fakewallet,sqlite \
  --root "$CARGO_ROOT" cdk-mintd --version "=$VERSION"
"$CARGO_BIN/cdk-mintd" --version
