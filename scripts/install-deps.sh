#!/usr/bin/env bash
# Install what dirac-sidecar needs to run and be tested: Debian's HAProxy (2.6 LTS), a consul
# binary and the Python package in a virtualenv. Used by both README commands, by .ci/run and
# by the Dockerfile. Idempotent, and fast when everything is already there.
#
# consul: a `consul` already on PATH wins. Otherwise Debian bullseye's consul 1.8.7 .deb is
# fetched with apt-get using a private sources list and state directory under .deps/apt (the
# system's apt sources are never touched) and only the binary is unpacked into .deps/bin.
# The mirror is the one the system's own apt sources already use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
VENV="${SIDECAR_VENV:-$ROOT/.venv}"
CONSUL_VERSION="1.8.7"
EXTRAS="${SIDECAR_EXTRAS-dev}"  # empty: runtime dependencies only (the image)

log() { echo "install-deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1; fi
}

apt_updated=""
apt_update_once() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq >&2 || log "apt-get update failed (continuing)"
        apt_updated=1
    fi
}

install_haproxy() {
    if command -v haproxy >/dev/null 2>&1; then return 0; fi
    log "installing Debian's haproxy"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >&2
    # The package enables a system haproxy.service that would bind :80 etc. on a gateway;
    # the sidecar runs its own master-worker instance, so keep the packaged one stopped.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    fi
}

# promtool and prometheus: the tests check the shipped alert rules and dashboard with them and
# run a real Prometheus against a daemon (tests/unit/test_alert_rules.py, test_prometheus_e2e.py).
install_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then return 0; fi
    [ -n "$EXTRAS" ] || return 0  # the image (runtime only) does not need it
    log "installing Debian's prometheus (promtool)"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus >&2
    # The package starts a system prometheus.service on :9090; the tests run their own.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
}

# The first URI of the system's Debian archive (not -security), from deb822 or one-line sources.
debian_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || { log "cannot find the Debian mirror in the system's apt sources"; return 1; }
    echo "$uri"
}

install_consul() {
    if command -v consul >/dev/null 2>&1; then return 0; fi
    if [ -x "$DEPS/bin/consul" ]; then return 0; fi
    log "fetching Debian bullseye's consul $CONSUL_VERSION into $DEPS/bin"
    local apt="$DEPS/apt" mirror keyring
    mirror="$(debian_mirror)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/state" "$DEPS/bin"
    echo "deb [signed-by=$keyring] $mirror bullseye main" > "$apt/sources.list"
    : > "$apt/status"
    local opts=(
        -o "Dir::Etc::SourceList=$apt/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State=$apt/state"
        -o "Dir::State::Lists=$apt/lists"
        -o "Dir::State::status=$apt/status"
        -o "Dir::Cache=$apt/cache"
        -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=root"
    )
    apt-get "${opts[@]}" update -qq >&2
    (cd "$apt/cache/archives" && apt-get "${opts[@]}" download "consul=$CONSUL_VERSION*" >&2)
    local deb
    deb="$(ls "$apt"/cache/archives/consul_*.deb | head -n1)"
    local unpack="$apt/unpack"
    rm -rf "$unpack" && mkdir -p "$unpack"
    dpkg-deb -x "$deb" "$unpack"
    install -m 0755 "$unpack/usr/bin/consul" "$DEPS/bin/consul"
    rm -rf "$unpack"
    "$DEPS/bin/consul" version | head -n1 >&2
}

install_python() {
    local stamp="$VENV/.installed-${EXTRAS:-runtime}" target="$ROOT"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then return 0; fi
    [ -n "$EXTRAS" ] && target="$ROOT[$EXTRAS]"
    log "creating virtualenv $VENV and installing $target"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    # pip's own warnings about unreachable extra indexes are noise here; errors still show.
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$target" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    "$VENV/bin/python" -c "import sidecar.cli, h11, jinja2" \
        || { log "the Python install failed"; exit 1; }
    touch "$stamp"
}

install_haproxy
install_consul
install_prometheus
install_python
log "ready: haproxy $(haproxy -v 2>/dev/null | head -n1 | awk '{print $3}'), consul at $(command -v consul || echo "$DEPS/bin/consul")"
