#!/usr/bin/env bash
# What a span costs by the size of its trace: the release daemon under
# 1,000,000 spans from hopscope-loadgen (4 connections, flat out, waiting for
# the analysis), once per trace shape (37 spans per trace, the load
# generator's default; 8 spans, the peers' load of benches/peers.sh; 4 spans;
# 64 traces per request for the small ones), with the log on (the defaults)
# and off (`--no-wal`). Prints, per run, the daemon's CPU-seconds per million
# spans including the analysis and its peak RSS (from /proc), then each small
# shape's ratio to the 37-span one within the same round: the ratios are what
# docs/PERFORMANCE.md compares, since the machine's speed moves between
# sittings. ROUNDS rounds (2 by default). Uses 127.0.0.1:4317 and 9980: stop
# anything listening there first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

cargo build --release --quiet --workspace

data=$(mktemp -d)
daemon=
trap 'if [[ -n $daemon ]]; then kill -TERM "$daemon" 2>/dev/null || true; fi; rm -rf "$data"' EXIT
rounds=${ROUNDS:-2}
results=$data/results

declare -A shapes=(
    [37]=""
    [8]="--depth 1 --fan-out 2 --entry-query --batch 512"
    [4]="--depth 1 --fan-out 1 --batch 256"
)

# run ROUND SPANS LOG ("on" or "off"): one daemon, one load; notes CPU-seconds
# per million spans and peak RSS in MiB in $results.
run() {
    local round=$1 spans=$2 log=$3 flags=()
    [[ $log == off ]] && flags=(--no-wal)
    target/release/hopscope serve --trace-idle 2s --data-dir "$data/d" "${flags[@]}" \
        >"$data/serve.log" 2>&1 &
    daemon=$!
    for _ in $(seq 200); do
        (echo >/dev/tcp/127.0.0.1/4317) 2>/dev/null && break
        sleep 0.05
    done
    local out
    # shellcheck disable=SC2086 # the shape's arguments are words
    out=$(target/release/hopscope-loadgen --spans 1000000 --connections 4 \
        --daemon-pid "$daemon" --api http://127.0.0.1:9980 --wait-analysis ${shapes[$spans]} 2>&1) ||
        echo "hopscope-loadgen failed ($spans spans per trace, log $log): its output follows" >&2
    kill -TERM "$daemon"
    wait "$daemon" || true
    daemon=
    rm -rf "${data:?}/d"
    local line rate rss
    line=$(grep -E '^daemon \+ analysis' <<<"$out" || true)
    [[ -n $line ]] || { echo "$out" >&2; exit 1; }
    rate=$(sed -nE 's/.*\(([0-9,]+) spans per CPU second\).*/\1/p' <<<"$line" | tr -d ,)
    rss=$(sed -nE 's/.*peak RSS ([0-9.]+) MiB.*/\1/p' <<<"$line")
    awk -v r="$round" -v s="$spans" -v l="$log" -v rate="$rate" -v rss="$rss" \
        'BEGIN { printf "%s %s %s %.2f %s\n", r, s, l, 1e6 / rate, rss }' | tee -a "$results"
}

echo "round spans_per_trace log cpu_s_per_million_spans peak_rss_mib"
for round in $(seq "$rounds"); do
    for log in on off; do
        for spans in 37 8 4; do
            run "$round" "$spans" "$log"
        done
    done
done

echo
echo "ratio to 37-span traces in the same round and log setting (CPU per span, peak RSS):"
awk '{ key = $1 " " $3; cpu[key, $2] = $4; rss[key, $2] = $5; keys[key] = 1 }
    END {
        for (k in keys) for (s = 8; s >= 4; s -= 4)
            printf "round %s log %s: %d spans %.2fx CPU, %.2fx RSS\n",
                substr(k, 1, index(k, " ") - 1), substr(k, index(k, " ") + 1), s,
                cpu[k, s] / cpu[k, 37], rss[k, s] / rss[k, 37]
    }' "$results" | sort
