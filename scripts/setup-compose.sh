#!/usr/bin/env bash
# Makes `docker compose` available for validating docker-compose.yml. Machines without a Docker
# engine often have the docker client but no compose plugin; the plugin is a Go program, so it is
# built from the Go module proxy into .cache/docker/cli-plugins (point DOCKER_CONFIG at
# .cache/docker to use it). Prints the DOCKER_CONFIG to use, or nothing when the machine's own
# `docker compose` works.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=v2.40.3
CONFIG="$ROOT/.cache/docker"
PLUGIN="$CONFIG/cli-plugins/docker-compose"

if docker compose version >/dev/null 2>&1; then exit 0; fi
if [ -x "$PLUGIN" ] && "$PLUGIN" version >/dev/null 2>&1; then echo "$CONFIG"; exit 0; fi
command -v go >/dev/null || { echo "setup-compose: Go is needed to build the docker compose plugin" >&2; exit 1; }

echo "setup-compose: building docker compose $VERSION from the Go module proxy (a few minutes, once)" >&2
export GOPATH="$ROOT/.cache/go" GOMODCACHE="$ROOT/.cache/go/mod" GOFLAGS="-mod=mod -modcacherw"
src=$(go mod download -json "github.com/docker/compose/v2@$VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built as the main module, from a copy: its go.mod has replace directives that `go install` refuses.
cp -r "$src/." "$work"
mkdir -p "$(dirname "$PLUGIN")"
(cd "$work" && go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$VERSION" -o "$PLUGIN.tmp" ./cmd) >&2
mv "$PLUGIN.tmp" "$PLUGIN"
echo "$CONFIG"
