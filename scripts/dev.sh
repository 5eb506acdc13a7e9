#!/usr/bin/env bash
# The one entry point for developers and CI.
#
#   bash scripts/dev.sh demo [args]        run the demo (citygw demo ...)
#   bash scripts/dev.sh test [pytest args] lint (ruff), type-check (mypy), then the test suite
#   bash scripts/dev.sh lint               ruff + mypy only
#   bash scripts/dev.sh pytest [args]      the test suite only
#   bash scripts/dev.sh setup              install everything, run nothing
#
# On a fresh Debian bookworm machine (as root, or with sudo) it installs what is missing: Python 3 with venv,
# Mosquitto, InfluxDB 1.x and VictoriaMetrics (the tests start their own instances on free loopback ports;
# the Debian services are not started), openssl; then a virtualenv in .venv with `pip install -e '.[test,demo]'`
# (demo: the embedded broker the demo and its test use), redone only when pyproject.toml or that list of extras
# changes. Repeat runs skip all of that.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.citygw-installed"  # holds the install spec below
INSTALL_SPEC=".[test,demo]"
APT_PACKAGES=(python3 python3-venv python3-pip mosquitto mosquitto-clients influxdb victoria-metrics openssl
    nats-server chromium chromium-driver systemd)  # systemd: systemd-analyze verify of the shipped unit
# Node tools for the tests (not for running citygw): Prism, the validating OpenAPI mock server that checks the
# NGSI-LD sink's requests against the ETSI spec.
NODE_TOOLS="$ROOT/.tools/node"
NODE_PACKAGES=("@stoplight/prism-cli@5.14.2")

log() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# -- system packages ---------------------------------------------------------------------------------------

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        pkg_installed "$pkg" || printf '%s\n' "$pkg"
    done
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

ensure_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        # Not Debian: check the tools directly and say what is missing.
        local tool missing=()
        for tool in python3 mosquitto mosquitto_passwd influxd victoria-metrics openssl; do
            command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
        done
        [ "${#missing[@]}" -eq 0 ] || die "not a Debian system; install these yourself: ${missing[*]}"
        return
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return
    log "installing Debian packages: ${missing[*]}"
    # Keep the packages' services from starting: the tests run their own servers, and a machine without an
    # init system cannot run them anyway. policy-rc.d exit 101 = "action forbidden" (see invoke-rc.d(8)).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT  # also when apt-get is interrupted
    fi
    local status=0
    as_root apt-get update -q || status=$?
    if [ "$status" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || status=$?
    fi
    if [ "$made_policy" -eq 1 ]; then
        as_root rm -f "$policy"
        trap - EXIT
    fi
    [ "$status" -eq 0 ] || die "apt-get failed (exit $status)"
}

# -- Python virtualenv -------------------------------------------------------------------------------------

python_ok() {
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

pick_python() {
    # A pyenv or other python first on PATH is fine when it is new enough; else Debian's.
    local candidate
    for candidate in "$(command -v python3 2>/dev/null || true)" /usr/bin/python3; do
        if [ -n "$candidate" ] && python_ok "$candidate"; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    die "no Python >= 3.11 with the venv module found (apt-get install -y python3 python3-venv)"
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "$VENV is broken (its Python is gone); recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(pick_python)"
        log "creating $VENV with $python ($("$python" --version 2>&1))"
        "$python" -m venv "$VENV"
        rm -f "$STAMP"
    fi
    if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ "$(cat "$STAMP")" != "$INSTALL_SPEC" ]; then
        log "installing citygw with its test tools and the demo's broker into $VENV ($INSTALL_SPEC)"
        export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$INSTALL_SPEC"
        printf '%s\n' "$INSTALL_SPEC" > "$STAMP"
    fi
}

ensure_node_tools() {
    [ -x "$NODE_TOOLS/node_modules/.bin/prism" ] && return
    if ! command -v npm >/dev/null 2>&1; then
        # Only when no Node.js is there: a NodeSource nodejs (which bundles npm) conflicts with Debian's npm.
        log "installing Debian packages: nodejs npm"
        as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends nodejs npm || die "apt-get install nodejs npm failed"
    fi
    log "installing node test tools into $NODE_TOOLS: ${NODE_PACKAGES[*]}"
    mkdir -p "$NODE_TOOLS"
    npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --loglevel=error "${NODE_PACKAGES[@]}" >&2 \
        || die "npm install failed"
}

setup() {
    ensure_system_packages
    ensure_venv
}

# -- commands -----------------------------------------------------------------------------------------------

run_lint() {
    log "ruff check ."
    "$VENV/bin/ruff" check .
    log "mypy"
    "$VENV/bin/mypy"
}

run_pytest() {
    # Two workers (pytest-xdist), each with its own servers on its own ports: most tests wait on servers and
    # gateway processes, so two halve the suite's time on the 2-core CI machine. CITYGW_TEST_WORKERS=0 runs
    # it in one process.
    local workers="${CITYGW_TEST_WORKERS:-2}"
    log "pytest -q -n $workers --durations=15 $*"
    "$VENV/bin/python" -m pytest -q -n "$workers" --durations=15 "$@"
}

[ "$#" -ge 1 ] || usage
command="$1"
shift

case "$command" in
    setup)
        setup
        ;;
    demo)
        setup
        exec "$VENV/bin/citygw" demo "$@"
        ;;
    test)
        setup
        ensure_node_tools
        run_lint  # fail fast, before the slower tests
        run_pytest "$@"
        ;;
    lint)
        setup
        run_lint
        ;;
    pytest)
        setup
        ensure_node_tools
        run_pytest "$@"
        ;;
    *)
        usage
        ;;
esac
