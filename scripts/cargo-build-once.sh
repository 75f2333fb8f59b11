# Sourced by the scripts that build a Rust tool for the tests once per machine, into cargo's own bin
# folder (outside the checkout, so a fresh clone finds it). Before sourcing, set TOOL and VERSION.
# Exits at once when that version is there; otherwise makes sure cargo and protoc are, and holds a
# lock so that test files starting the tool at the same time build it once. The caller then builds.
CARGO_ROOT="${CARGO_HOME:-$HOME/.cargo}"
CARGO_BIN="$CARGO_ROOT/bin"
built() { [ -x "$CARGO_BIN/$TOOL" ] && "$CARGO_BIN/$TOOL" --version 2>/dev/null | grep -q "$VERSION"; }
if built; then exit 0; fi
export PATH="$CARGO_BIN:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo (Rust) is required to build $TOOL for the tests: install it with rustup" >&2
  exit 1
fi
# Both tools compile .proto files (gRPC extension points) in their dependencies.
if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is required to build $TOOL: apt-get install protobuf-compiler" >&2
    exit 1
  fi
fi
exec 9>"${TMPDIR:-/tmp}/setup-$TOOL.lock"
flock 9
if built; then exit 0; fi
