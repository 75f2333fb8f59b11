#!/usr/bin/env node
// In a clone the sources run as they are (Node strips their types), so `npx cashu-gateway` works
// before any build and never runs a stale dist/. Node strips no types under node_modules, so an
// installed package runs its build.
const installed = import.meta.url.includes('/node_modules/');
await import(installed ? '../dist/cli.js' : '../src/cli.ts');
