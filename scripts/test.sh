#!/usr/bin/env bash
# The project's one test command: Rust build + unit/integration tests, then the official Azure
# Key Vault keys SDK for Python against the real server binary (interop/).
#
#   bash scripts/test.sh
#
# Needs: Rust (cargo) and python3 (node/npm for Azurite, else the az:// tests skip). The virtualenv is made at .venv on first use.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
START=$(date +%s)

section() { printf '\n==== %s ====\n' "$*"; }

# Makes a working virtualenv at .venv (recreated when broken). On Debian's own python3 the venv
# module needs the python3-venv package; install it when we can (root or passwordless sudo).
ensure_venv() {
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys, pip' >/dev/null 2>&1; then
        return
    fi
    rm -rf .venv
    if python3 -m venv .venv 2>/tmp/cmkvault-venv.err; then
        return
    fi
    rm -rf .venv
    echo "python3 -m venv failed:" >&2
    cat /tmp/cmkvault-venv.err >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "Install the python3-venv package (apt-get install python3-venv) and re-run." >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "No apt-get: install Python's venv module for $(python3 --version) and re-run." >&2
        exit 1
    fi
    local ver
    ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    echo "Installing python3-venv with apt-get..."
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
        || $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv"
    python3 -m venv .venv
}

section "cargo build --workspace"
cargo build --workspace

section "cargo test --workspace (Rust suites)"
cargo test --workspace

section "Python environment (.venv, interop/requirements.txt)"
ensure_venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r interop/requirements.txt
.venv/bin/python --version
.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -Ei '^(azure-core|azure-identity|azure-keyvault-keys|cryptography|pytest) ' || true

section "Azurite (blob emulator for the az:// tests; skipped if npm is unreachable)"
# shellcheck source=scripts/azurite.sh
source "$ROOT/scripts/azurite.sh"
azurite_start || true

section "Azure SDK interop suite (pytest -q interop)"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CMKVAULT_BIN="$TARGET_DIR/debug/cmkvault"
.venv/bin/python -m pytest -q interop

section "All tests passed ($(( $(date +%s) - START ))s)"
