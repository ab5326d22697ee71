#!/usr/bin/env bash
# What two tiers cost (deploy/README.md, "Scaling out"), on this machine:
# receiver CPU per million spans of one daemon alone (defaults: the log on),
# of an assembling replica (tier 1: the log on, forwarding) and of a detect
# replica (tier 2), and the bytes forwarded per span, gzip (the default) and
# uncompressed. The load is the load generator's default shape; CPU is
# utime + stime from /proc, from start to the last record analyzed.
#
#   cargo build --release -p hopscope -p hopscope-loadgen && bash benches/two_tier.sh
#
# Fixed loopback ports 251xx-253xx; SPANS (default 1,000,000) per run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
SPANS=${SPANS:-1000000}
TICK=$(getconf CLK_TCK)
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT

# serve NAME BASE [flags]: a daemon on ports BASE17 (gRPC), BASE18 (HTTP),
# BASE80 (API), BASE86 (Jaeger), its data in $DIR/NAME; sets PID_NAME.
serve() {
  local name=$1 base=$2
  shift 2
  "$BIN/hopscope" serve --data-dir "$DIR/$name" --log warn --trace-idle 2s \
    --otlp-grpc-addr "127.0.0.1:${base}17" --otlp-http-addr "127.0.0.1:${base}18" \
    --api-addr "127.0.0.1:${base}80" --jaeger-addr "127.0.0.1:${base}86" "$@" &
  printf -v "PID_$name" '%s' $!
  until curl -sf "127.0.0.1:${base}80/readyz" >/dev/null; do sleep 0.1; done
}
stats() { curl -sf "127.0.0.1:${1}80/api/v1/stats"; }
cpu_s() { awk -v t="$TICK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
per_million() { awk -v c="$1" -v n="$2" 'BEGIN {printf "%.2f", c * 1e6 / n}'; }
# until BASE JQ: waits until the daemon's stats satisfy the jq condition.
until_stats() {
  for _ in $(seq 600); do
    [ "$(stats "$1" | jq "$2")" = true ] && return 0
    sleep 0.2
  done
  echo "gave up waiting on $1 for $2" >&2
  exit 1
}
load() { "$BIN/hopscope-loadgen" --endpoint "http://127.0.0.1:${1}17" --spans "$SPANS" --quiet >/dev/null; }
settled='.buffered_spans == 0 and .analysis_pending == 0 and .detectors_current'

serve alone 251
load 251
until_stats 251 "$settled"
alone=$(cpu_s "$PID_alone")
kill "$PID_alone"

echo "| run | tier 1 CPU-s per M spans | tier 2 CPU-s per M spans | both | alone | bytes forwarded per span |"
echo "|---|---|---|---|---|---|"
for compression in gzip none; do
  serve detect 253 --role detect
  serve assemble 252 --role assemble --forward-otlp http://127.0.0.1:25317 --forward-compression "$compression"
  load 252
  until_stats 252 "$settled and .forward_spans_queued == 0"
  forwarded=$(stats 252 | jq .counters.forward_spans)
  until_stats 253 ".counters.spans_accepted == $forwarded and $settled"
  tier1=$(cpu_s "$PID_assemble")
  tier2=$(cpu_s "$PID_detect")
  bytes=$(stats 252 | jq '.counters.forward_bytes / .counters.forward_spans | . * 10 | round / 10')
  echo "| $compression | $(per_million "$tier1" "$SPANS") | $(per_million "$tier2" "$SPANS") | $(per_million "$(awk -v a="$tier1" -v b="$tier2" 'BEGIN {print a + b}')" "$SPANS") | $(per_million "$alone" "$SPANS") | $bytes |"
  kill "$PID_assemble" "$PID_detect"
  wait "$PID_assemble" "$PID_detect" 2>/dev/null || true
  rm -rf "$DIR/assemble" "$DIR/detect"
done
