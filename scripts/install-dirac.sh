#!/usr/bin/env bash
# Install real DIRAC (the DISET client, server and proxy code) into a SEPARATE virtualenv for
# the end-to-end test (tests/integration/test_dirac_e2e.py), so the project's venv stays clean.
#
# What is installed, and why only that (see ../shared/docs/dirac.md, "Running real DIRAC in
# tests"): M2Crypto built from source with Debian's swig, libssl-dev and gcc; DIRAC 9.1.22 with
# --no-deps (its 40-odd declared dependencies such as gfal2-python, rucio and boto3 are not
# needed for DISET); then exactly what the DISET service, client and proxy code import.
#
# Idempotent and fast when done: a stamp file records the exact set installed; when it matches,
# the script exits at once. Prints timings. Environment:
#   DIRAC_VENV   where the venv goes (default <repo>/.deps/dirac-venv)
#   PYTHON       the interpreter to base it on (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIRAC_VENV:-$ROOT/.deps/dirac-venv}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(
    "M2Crypto==0.51.0"
    "DIRACCommon==9.1.22"
    "diraccfg==1.0.1"
    "diracx-core==0.7.0"
    "diracx-client==0.7.0"
    "cachetools" "importlib_metadata" "importlib_resources" "psutil"
    "pyasn1" "pyasn1_modules" "requests" "packaging"
)
DIRAC_PKG="DIRAC==9.1.22"
STAMP="$VENV/.dirac-sidecar-stamp"
WANT="$DIRAC_PKG ${PACKAGES[*]}"

log() { echo "install-dirac: $*" >&2; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1; fi
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    log "already installed in $VENV (stamp matches)"
    exit 0
fi

T0="$(now)"
missing=()
command -v swig >/dev/null 2>&1 || missing+=(swig)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq >&2 || log "apt-get update failed (continuing)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
log "build tools ready ($(took "$T0"))"

T1="$(now)"
rm -f "$STAMP"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel >&2
log "venv ready ($(took "$T1"))"

T2="$(now)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" >&2
log "dependencies incl. M2Crypto build ($(took "$T2"))"

T3="$(now)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$DIRAC_PKG" >&2
"$VENV/bin/python" -c 'import M2Crypto, DIRAC; from DIRAC.Core.DISET.RPCClient import RPCClient; from DIRAC.Core.Security.X509Chain import X509Chain; print("DIRAC", DIRAC.version)' >&2
log "DIRAC ($(took "$T3"))"

echo "$WANT" >"$STAMP"
log "done in $(took "$T0"): $VENV"
