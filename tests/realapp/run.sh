#!/usr/bin/env bash
# hopscope's real-application suite: small Flask and express services under the
# real OpenTelemetry auto-instrumentation (opentelemetry-instrument gunicorn;
# node --require @opentelemetry/auto-instrumentations-node/register) against a
# real PostgreSQL, exporting OTLP to a real hopscope daemon; each scenario
# asserts the daemon's findings over its HTTP API (see suite.py).
#
#   tests/realapp/run.sh [SCENARIO...]     all scenarios, or the ones named
#
# Installs what it needs: PostgreSQL (apt-get install postgresql when no
# initdb is found), python3-venv and Node.js/npm with apt-get when missing, a
# virtualenv with tests/realapp/requirements.txt under target/realapp/venv
# (kept while the file is unchanged), the Node packages with npm ci (kept
# while package-lock.json is unchanged). Starts a throwaway PostgreSQL
# cluster on a free loopback port with the data of schema.sql, stopped at exit.
#
# Environment: HOPSCOPE_BIN (the daemon; default: cargo build, then
# target/debug/hopscope), REALAPP_SAVE (where each scenario's traces, as
# Jaeger query-API JSON that `hopscope analyze` reads, and its findings go;
# default target/realapp/traces), REALAPP_ROUNDS (each scenario sends its
# concurrency this many times instead of its default). Under CI=true a failed
# install fails the suite; elsewhere it is skipped, loudly. The last line is
# "realapp: N passed, M failed"; the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
here="$repo/tests/realapp"
REALAPP_T0="$(date +%s.%N)"
export REALAPP_T0

skip() {
    if [[ "${CI:-}" == "true" ]]; then
        echo "realapp: cannot run: $1" >&2
        echo "realapp: 0 passed, 1 failed"
        exit 1
    fi
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!! SKIPPED: the real-application suite: $1" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 0
}

# -- system packages ------------------------------------------------------
initdb_path() { compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1; }
missing=()
[[ -n "$(initdb_path)" ]] || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        skip "${missing[*]} missing, and apt-get as root is not available to install them"
    fi
    echo "realapp: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || skip "apt-get update failed"
    apt-get install -y -qq "${missing[@]}" >/dev/null || skip "apt-get install ${missing[*]} failed"
    [[ -n "$(initdb_path)" ]] || skip "no initdb after installing postgresql"
fi
pgbin="$(dirname "$(initdb_path)")"

# -- Python: the services' virtualenv ---------------------------------------
venv="$repo/target/realapp/venv"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    echo "realapp: creating $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || skip "python3 -m venv failed"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" ||
        { rm -rf "$venv"; skip "pip install -r tests/realapp/requirements.txt (PyPI) failed"; }
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi
export REALAPP_VENV="$venv"

# -- Node: the services' packages -------------------------------------------
if ! cmp -s "$here/node/package-lock.json" "$here/node/node_modules/.realapp-package-lock.json"; then
    echo "realapp: npm ci in tests/realapp/node"
    (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error) ||
        skip "npm ci in tests/realapp/node (the npm registry) failed"
    cp "$here/node/package-lock.json" "$here/node/node_modules/.realapp-package-lock.json"
fi

# -- the daemon ---------------------------------------------------------------
if [[ -z "${HOPSCOPE_BIN:-}" ]]; then
    echo "realapp: cargo build"
    cargo build --quiet
    HOPSCOPE_BIN="$repo/target/debug/hopscope"
fi
HOPSCOPE_BIN="$(realpath "$HOPSCOPE_BIN")"
export HOPSCOPE_BIN
"$HOPSCOPE_BIN" --version >/dev/null

# -- PostgreSQL: a throwaway cluster ----------------------------------------
# initdb refuses to run as root: as root the cluster belongs to the postgres
# user (created by Debian's package), otherwise to whoever runs this.
pgdir="$(mktemp -d /tmp/realapp-pg.XXXXXX)"
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    chown postgres: "$pgdir"
    as_pg=(runuser -u postgres --)
fi
pg_stop() {
    if [[ -f "$pgdir/data/postmaster.pid" ]]; then
        "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pgdir"
}
trap pg_stop EXIT
pgport="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cd "$pgdir"  # the postgres user may not read the working tree
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 >"$pgdir/initdb.log" 2>&1 ||
    { cat "$pgdir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 start \
    -o "-c port=$pgport -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pgdir -c fsync=off -c synchronous_commit=off -c max_connections=200" >/dev/null ||
    { cat "$pgdir/postgres.log" >&2; exit 1; }
psql_() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
psql_ -d postgres -c 'CREATE DATABASE shop'
psql_ -d shop -f "$here/schema.sql"
echo "realapp: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport (schema.sql loaded)"
export REALAPP_PG_PORT="$pgport"
cd "$repo"

"$venv/bin/python" "$here/suite.py" "$@"
