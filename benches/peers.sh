#!/usr/bin/env bash
# Spans per receiver CPU-second: hopscope (defaults, and --no-wal) beside rotel
# (blackhole exporter) and perf-sentinel 0.7.8 (`watch`), back to back on the
# same load: hopscope-loadgen over OTLP/gRPC, 4 connections, 10 s flat out,
# 8-span traces (--entry-query), 64 traces per request. The receiver's CPU
# time comes from /proc (`--daemon-pid`); for hopscope the figure including
# analysis is noted too. ROUNDS rounds of the four (3 by default), then a
# table: each round's figures and ratios (defaults to each peer, log on to
# log off; the peers' own figures move between sittings, so ratios are taken
# within a round) and their medians. docs/PERFORMANCE.md keeps the results.
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
receiver=
trap 'if [[ -n $receiver ]]; then kill -TERM "$receiver" 2>/dev/null || true; fi; rm -rf "$data"' EXIT
rounds=${ROUNDS:-3}
results=$data/results

# run ROUND LABEL "LOADGEN ARGS" RECEIVER...: starts the receiver, loads it,
# stops it, and notes its spans per CPU-second (while sending, and including
# the analysis that finished after the last answer) in $results.
run() {
    local round=$1 label=$2 extra=$3
    shift 3
    "$@" >"$data/$label.log" 2>&1 &
    receiver=$!
    for _ in $(seq 200); do
        (echo >/dev/tcp/127.0.0.1/4317) 2>/dev/null && break
        sleep 0.05
    done
    echo "== round $round: $label"
    local out
    # shellcheck disable=SC2086 # the extra arguments are words
    out=$(target/release/hopscope-loadgen --duration 10s --connections 4 --depth 1 --fan-out 2 \
        --entry-query --batch 512 --daemon-pid "$receiver" $extra 2>&1) ||
        echo "hopscope-loadgen failed against $label: its output follows" >&2
    grep -E '^accepted|^refused|daemon ingest|daemon \+ analysis|raw prost|^Error' <<<"$out"
    kill -TERM "$receiver"
    wait "$receiver" || true
    receiver=
    rm -rf "${data:?}/$label"
    local sending all
    sending=$(sed -nE 's/^daemon ingest .*\(([0-9,]+) spans per CPU second\).*/\1/p' <<<"$out" | tr -d ,)
    all=$(sed -nE 's/^daemon \+ analysis .*\(([0-9,]+) spans per CPU second\).*/\1/p' <<<"$out" | tr -d ,)
    echo "$round $label ${sending:-0} ${all:-0}" >>"$results"
}

for round in $(seq "$rounds"); do
    run "$round" hopscope-defaults "--api http://127.0.0.1:9980 --wait-analysis" \
        target/release/hopscope serve --data-dir "$data/hopscope-defaults"
    run "$round" hopscope-no-wal "--api http://127.0.0.1:9980 --wait-analysis" \
        target/release/hopscope serve --data-dir "$data/hopscope-no-wal" --no-wal
    run "$round" rotel "--allow-refused" \
        "$ROTEL" start --otlp-grpc-endpoint 127.0.0.1:4317 --otlp-http-endpoint 127.0.0.1:4319 \
        --exporter blackhole
    run "$round" perf-sentinel "--allow-refused" \
        "$PERF_SENTINEL" watch --listen-address 127.0.0.1 --listen-port-grpc 4317 \
        --listen-port-http 4320
done

# Per round (the peers' own figures move between sittings, so ratios are
# taken within a round), then the median of each column.
echo
echo "round  defaults  (incl. analysis)  no-wal  rotel  perf-sentinel  x rotel  x perf-sentinel  log on/off"
awk '
    { v[$1, $2] = $3; a[$1, $2] = $4; if ($1 > n) n = $1 }
    function median(x, k,    i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
        return k % 2 ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2
    }
    END {
        for (r = 1; r <= n; r++) {
            d = v[r, "hopscope-defaults"]; w = v[r, "hopscope-no-wal"]
            ro = v[r, "rotel"]; ps = v[r, "perf-sentinel"]
            c1[r] = d; c2[r] = a[r, "hopscope-defaults"]; c3[r] = w; c4[r] = ro; c5[r] = ps
            c6[r] = ro ? d / ro : 0; c7[r] = ps ? d / ps : 0; c8[r] = w ? d / w : 0
            printf "%5d  %8d  %16d  %6d  %5d  %13d  %7.2f  %15.2f  %10.2f\n", r, d, c2[r], w, ro, ps, c6[r], c7[r], c8[r]
        }
        printf "median %7d  %16d  %6d  %5d  %13d  %7.2f  %15.2f  %10.2f\n",
            median(c1, n), median(c2, n), median(c3, n), median(c4, n), median(c5, n),
            median(c6, n), median(c7, n), median(c8, n)
    }' "$results"
