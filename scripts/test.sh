#!/usr/bin/env bash
# The project's one test command: Rust build + unit/integration tests, then the official Azure
# Key Vault keys SDK for Python against the real server binary (interop/).
#
#   bash scripts/test.sh
#
# Needs: Rust (cargo), python3, and node/npm for Azurite (CMKVAULT_SKIP_AZURITE=1 skips the az:// tests). The virtualenv is made at .venv on first use.
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

section "Azurite (blob emulator for the az:// tests)"
# shellcheck source=scripts/azurite.sh
source "$ROOT/scripts/azurite.sh"
if ! azurite_start; then
    # The az:// interop tests need it; skipping them must be a choice, not an accident.
    if [ "${CMKVAULT_SKIP_AZURITE:-}" = 1 ]; then
        echo "CMKVAULT_SKIP_AZURITE=1: the az:// interop tests will be skipped"
    else
        echo "Azurite did not start (see above). Set CMKVAULT_SKIP_AZURITE=1 to run without the az:// tests." >&2
        exit 1
    fi
fi

section "Azure SDK interop suite (pytest -q interop)"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CMKVAULT_BIN="$TARGET_DIR/debug/cmkvault"
.venv/bin/python -m pytest -q interop

section "All tests passed ($(( $(date +%s) - START ))s)"
