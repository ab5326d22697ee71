#!/usr/bin/env bash
# Bytes forwarded per span on the load generator's default shape: hopscope A
# forwards to hopscope B; loadgen sends to A; A's counters give the figure.
set -euo pipefail
BIN=${BIN:-target/debug}
SPANS=${SPANS:-20000}
for compression in gzip none; do
  "$BIN/hopscope" serve --no-wal --otlp-grpc-addr 127.0.0.1:24317 --otlp-http-addr 127.0.0.1:24318 \
      --api-addr 127.0.0.1:29980 --jaeger-addr 127.0.0.1:26686 --trace-idle 1s --log warn & B=$!
  "$BIN/hopscope" serve --no-wal --otlp-grpc-addr 127.0.0.1:14317 --otlp-http-addr 127.0.0.1:14318 \
      --api-addr 127.0.0.1:19980 --jaeger-addr 127.0.0.1:16687 --trace-idle 1s --log warn \
      --forward-otlp http://127.0.0.1:24317 --forward-compression "$compression" & A=$!
  sleep 2
  "$BIN/hopscope-loadgen" --endpoint http://127.0.0.1:14317 --spans "$SPANS" --quiet >/dev/null
  for _ in $(seq 120); do
    s=$(curl -s 127.0.0.1:19980/api/v1/stats)
    [ "$(jq '.counters.forward_spans' <<<"$s")" -ge "$SPANS" ] && break
    sleep 1
  done
  jq --arg c "$compression" '.counters | {compression: $c, forward_spans, forward_requests, forward_bytes, bytes_per_span: (.forward_bytes / .forward_spans)}' <<<"$s"
  kill "$A" "$B"; wait "$A" "$B" || true
done
