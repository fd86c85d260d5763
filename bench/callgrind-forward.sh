#!/usr/bin/env bash
# Instructions per call on a forwarding node (callgrind): three static-peer nodes on loopback, B
# under valgrind running NODE_BIN, A and C running PEER_BIN (default: target/release/ringlimit);
# N 1-item calls to B, one in flight, over 10,000 keys, so about two thirds are forwarded (the
# count is printed, from B's `ringlimit_peer_call_items`). Counters are zeroed after 1,000 warm-up
# calls. Per-function figures: `callgrind_annotate --inclusive=yes OUT/callgrind.out.*.1`, or two
# builds compared with `bench/cgdiff.py`.
#
#   bench/callgrind-forward.sh target/profiling/ringlimit /tmp/cgfwd [N=3000]
#
# Needs valgrind (callgrind_control, callgrind_annotate) and curl. Loopback only; ports 19200-19221.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE=$1; OUT=$2; N=${3:-3000}
PEER_BIN=${PEER_BIN:-$ROOT/target/release/ringlimit}
mkdir -p "$OUT"; rm -f "$OUT"/callgrind.out.*
PEERS="127.0.0.1:19201,127.0.0.1:19211,127.0.0.1:19221"
node_env=(GUBER_PEER_DISCOVERY_TYPE=static "GUBER_PEERS=$PEERS" GUBER_LOG_LEVEL=warn)
env "${node_env[@]}" GUBER_GRPC_ADDRESS=127.0.0.1:19201 GUBER_HTTP_ADDRESS=127.0.0.1:19200 \
  "$PEER_BIN" >"$OUT/a.log" 2>&1 &
A=$!
env "${node_env[@]}" GUBER_GRPC_ADDRESS=127.0.0.1:19221 GUBER_HTTP_ADDRESS=127.0.0.1:19220 \
  "$PEER_BIN" >"$OUT/c.log" 2>&1 &
C=$!
env "${node_env[@]}" GUBER_GRPC_ADDRESS=127.0.0.1:19211 GUBER_HTTP_ADDRESS=127.0.0.1:19210 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" "$NODE" >"$OUT/b.log" 2>&1 &
V=$!
trap 'kill $A $C $V 2>/dev/null || true' EXIT
for port in 19200 19210 19220; do
  for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 1; done
done
common=(--target 127.0.0.1:19211 --connections 1 --concurrency 1 --items 1 --keys 10000)
"$PEER_BIN" bench "${common[@]}" --calls 1000 >/dev/null 2>&1
forwarded() {
  curl -fsS http://127.0.0.1:19210/metrics |
    awk '/^ringlimit_peer_call_items_sum/ { s += $2 } END { print s + 0 }'
}
before=$(forwarded)
callgrind_control -z $V >/dev/null 2>&1
"$PEER_BIN" bench "${common[@]}" --calls "$N" >/dev/null 2>&1
callgrind_control -d forward $V >/dev/null 2>&1
after=$(forwarded)
for f in "$OUT"/callgrind.out.*.[0-9]*; do
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  echo "$((total / N)) instructions per call on the forwarding node, $((after - before)) of $N calls forwarded ($f)"
done
