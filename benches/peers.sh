#!/usr/bin/env bash
# Spans per receiver CPU-second: hopscope (defaults, and --no-wal) beside rotel
# (blackhole exporter) and perf-sentinel 0.7.8 (`watch`), back to back on the
# same load: hopscope-loadgen over OTLP/gRPC, 4 connections, 10 s flat out,
# 8-span traces (--entry-query), 64 traces per request. The receiver's CPU time comes from
# /proc (`--daemon-pid`); for hopscope the figure including analysis is
# printed too. docs/PERFORMANCE.md keeps the results.
#
# Installs the peers the way a user would, under target/peers/ (a virtualenv
# for rotel from PyPI; `cargo install perf-sentinel --version 0.7.8 --locked`),
# unless ROTEL and PERF_SENTINEL name binaries already installed. Uses
# 127.0.0.1:4317 and 9980: stop anything listening there first.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=target/peers
export CARGO_TERM_COLOR=never

cargo build --release --quiet --workspace
if [[ -z "${ROTEL:-}" ]]; then
    [[ -x $peers/venv/bin/python ]] || python3 -m venv "$peers/venv"
    "$peers/venv/bin/pip" install --quiet rotel
    ROTEL=$("$peers/venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
fi
if [[ -z "${PERF_SENTINEL:-}" ]]; then
    [[ -x $peers/bin/perf-sentinel ]] ||
        cargo install --quiet --locked perf-sentinel --version 0.7.8 --root "$peers"
    PERF_SENTINEL=$peers/bin/perf-sentinel
fi

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# run LABEL "LOADGEN ARGS" RECEIVER...: starts the receiver, loads it, stops it.
run() {
    local label=$1 extra=$2
    shift 2
    "$@" >"$data/$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do
        (echo >/dev/tcp/127.0.0.1/4317) 2>/dev/null && break
        sleep 0.05
    done
    echo "== $label"
    # shellcheck disable=SC2086 # the extra arguments are words
    target/release/hopscope-loadgen --duration 10s --connections 4 --depth 1 --fan-out 2 --entry-query \
        --batch 512 --daemon-pid "$pid" $extra 2>&1 |
        grep -E '^accepted|^refused|daemon ingest|daemon \+ analysis|raw prost'
    kill -TERM "$pid"
    wait "$pid" || true
}

run hopscope-defaults "--api http://127.0.0.1:9980 --wait-analysis" \
    target/release/hopscope serve --data-dir "$data/defaults"
run hopscope-no-wal "--api http://127.0.0.1:9980 --wait-analysis" \
    target/release/hopscope serve --data-dir "$data/no-wal" --no-wal
run rotel "--allow-refused" \
    "$ROTEL" start --otlp-grpc-endpoint 127.0.0.1:4317 --otlp-http-endpoint 127.0.0.1:4319 \
    --exporter blackhole
run perf-sentinel "--allow-refused" \
    "$PERF_SENTINEL" watch --listen-address 127.0.0.1 --listen-port-grpc 4317 \
    --listen-port-http 4320
