#!/usr/bin/env bash
# Azurite (the Azure Storage emulator, blob service only) for the az:// tests.
#
#   source scripts/azurite.sh && azurite_start   # installs azurite@3.37.0 into .azurite/ (npm,
#                                                # git-ignored), starts it on a free 127.0.0.1 port
#                                                # in memory, exports the object_store env vars
#   azurite_stop                                 # kills it by PID (also set up as an EXIT trap)
#
# On any failure (no node/npm, registry unreachable, no answer) azurite_start prints why and
# returns 1 without exporting anything: the az:// interop tests then skip themselves.
AZURITE_VERSION=3.37.0
AZURITE_PID=""

azurite_stop() {
    if [ -n "$AZURITE_PID" ] && kill -0 "$AZURITE_PID" 2>/dev/null; then
        kill "$AZURITE_PID" 2>/dev/null || true
        wait "$AZURITE_PID" 2>/dev/null || true
    fi
    AZURITE_PID=""
}

azurite_start() {
    local root dir port bin i
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    dir="$root/.azurite"
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        echo "azurite: node/npm not found; az:// tests will be skipped" >&2
        return 1
    fi
    bin="$dir/node_modules/.bin/azurite-blob"
    if [ ! -x "$bin" ] || ! grep -q "\"version\": \"$AZURITE_VERSION\"" \
        "$dir/node_modules/azurite/package.json" 2>/dev/null; then
        mkdir -p "$dir"
        if ! npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$dir" \
            "azurite@$AZURITE_VERSION" >"$dir/npm.log" 2>&1; then
            echo "azurite: npm install failed (see $dir/npm.log); az:// tests will be skipped" >&2
            return 1
        fi
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --skipApiVersionCheck \
        --loose --disableTelemetry --silent >"$dir/azurite.log" 2>&1 &
    AZURITE_PID=$!
    trap azurite_stop EXIT
    for i in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
            export AZURE_STORAGE_USE_EMULATOR=true
            export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port"
            export AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$port/devstoreaccount1;"
            echo "azurite $AZURITE_VERSION (pid $AZURITE_PID) on 127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$AZURITE_PID" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "azurite: did not start (see $dir/azurite.log); az:// tests will be skipped" >&2
    azurite_stop
    return 1
}
