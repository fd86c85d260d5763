#!/usr/bin/env bash
# A/B of two builds on the same load: nodes of NODE_BIN, load from this checkout's `ringlimit bench`.
#   bench/ab.sh NODE_BIN LABEL        (T=8s by default; run it alternately for each build, 3 times)
# Scenarios: one node with 1 and 100 items per call, and 3 static-peer nodes with 1 item per call
# (2/3 forwarded). Everything on 127.0.0.1, ports 25050-25066; every run bounded by T.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_BIN=$1
LABEL=$2
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
T=${T:-8s}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start() {
  GUBER_GRPC_ADDRESS=127.0.0.1:$1 GUBER_HTTP_ADDRESS=127.0.0.1:$2 GUBER_PEER_DISCOVERY_TYPE=$3 \
    GUBER_PEERS=$4 GUBER_LOG_LEVEL=warn GUBER_CACHE_SIZE=1000000 "$NODE_BIN" >"$WORK/$1.log" 2>&1 &
  echo $!
}
wait_up() {
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$1/v1/HealthCheck" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "node on HTTP port $1 did not come up" >&2
}
result() {
  jq -r --arg l "$LABEL" --arg s "$1" \
    '"\($l) \($s): \(.decisions_per_sec|floor) decisions/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us, errors \(.errors)"'
}
load() { "$LOAD" bench --connections 4 --concurrency 64 --keys 10000 --warmup 1s --time "$T" --json "$@"; }

P=$(start 25051 25050 none "")
wait_up 25050
load --target 127.0.0.1:25051 --items 1 | result single_1
load --target 127.0.0.1:25051 --items 100 | result single_100
kill "$P"; wait "$P" 2>/dev/null
PEERS=127.0.0.1:25061,127.0.0.1:25063,127.0.0.1:25065
A=$(start 25061 25062 static $PEERS); B=$(start 25063 25064 static $PEERS); C=$(start 25065 25066 static $PEERS)
wait_up 25062; wait_up 25064; wait_up 25066
load --targets "$PEERS" --items 1 | result cluster_1
kill "$A" "$B" "$C"; wait "$A" "$B" "$C" 2>/dev/null
