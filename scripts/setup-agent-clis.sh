#!/usr/bin/env bash
# Installs the real agent CLIs that test/agent-clis.e2e.test.ts drives, at pinned versions, into
# .cache/agent-clis (ignored). Idempotent: a CLI already at its pinned version is left as it is,
# so only the first run needs the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/agent-clis
claude_code=2.1.332
codex=0.171.0

installed() { [ -x "$dir/node_modules/.bin/$1" ] && "$dir/node_modules/.bin/$1" --version 2>/dev/null | grep -qF "$2"; }

if installed claude "$claude_code" && installed codex "$codex"; then exit 0; fi
mkdir -p "$dir"
cat > "$dir/package.json" <<JSON
{ "private": true, "dependencies": { "@anthropic-ai/claude-code": "$claude_code", "@openai/codex": "$codex" } }
JSON
# Both ship native binaries as optional per-platform packages; Claude Code's postinstall puts its
# binary in place of the bin stub.
npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --loglevel=error
installed claude "$claude_code"
installed codex "$codex"
