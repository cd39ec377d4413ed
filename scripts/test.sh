#!/usr/bin/env bash
# README command 2 (and what .ci/run calls): install what is needed, then lint, type-check and
# run the whole test suite (unit tests and the integration tests against real Consul, HAProxy
# and TLS processes on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
export PATH="$ROOT/.deps/bin:$ROOT/.venv/bin:$PATH"
cd "$ROOT"
echo "== ruff"; ruff check sidecar tests bench
echo "== mypy"; mypy
echo "== import contract"; lint-imports
# Two workers (pytest-xdist): most integration tests wait on Consul and HAProxy, not on the
# CPU; ``--dist loadfile`` keeps each module on one worker, so its module fixtures (a Consul
# agent, a cluster, a gateway) are built once. SIDECAR_TEST_WORKERS=0: serial.
workers="${SIDECAR_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadfile); fi
echo "== pytest"; exec pytest -p no:cacheprovider "${parallel[@]}" "$@"
