#!/usr/bin/env bash
# README command 1: install what is needed, then run the gateway on an embedded default
# (a Consul dev agent when none is configured, sample DIRAC-like TLS services, sidecar run
# with configs/dev.toml) and call every service through its fixed gateway port.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
export PATH="$ROOT/.deps/bin:$ROOT/.venv/bin:$PATH"
exec "$ROOT/.venv/bin/python" -m devkit.demo "$@"
