#!/usr/bin/env bash
# Instructions per decision on the node (callgrind), GetRateLimits with ITEMS items per call: the
# repeatable figure behind issue 16's 100-item target, for comparing two builds on a busy machine
# where decisions/s are not. The node runs under valgrind; counters are zeroed after a warm-up,
# then dumped after N more calls; decisions are counted by the node (`ringlimit_items_per_call`),
# with the two metrics scrapes inside the window (a few thousand instructions). NODE_ENV='A=1 B=2'
# sets the node's environment (an allocator preloaded, say). Per-function differences between two dumps (two builds):
# `bench/cgdiff.py A/callgrind.out.*.1 B/callgrind.out.*.1 N`.
#
#   bench/callgrind-items.sh target/profiling/ringlimit /tmp/cg [ITEMS=100] [N=500]
#
# Needs valgrind (callgrind_control, callgrind_annotate) and curl. Loopback only; ports 18952-3.
set -euo pipefail
NODE=$1; OUT=$2; ITEMS=${3:-100}; N=${4:-500}
mkdir -p "$OUT"; rm -f "$OUT"/callgrind.out.*
G=127.0.0.1:18953; H=127.0.0.1:18952
GUBER_GRPC_ADDRESS=$G GUBER_HTTP_ADDRESS=$H GUBER_PEER_DISCOVERY_TYPE=none GUBER_LOG_LEVEL=warn \
  GUBER_CACHE_SIZE=1000000 env ${NODE_ENV:-} \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" "$NODE" >"$OUT/node.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fsS "http://$H/readyz" >/dev/null 2>&1 && break; sleep 1; done
common=(--target "$G" --connections 2 --concurrency 8 --items "$ITEMS" --keys 10000)
"$NODE" bench "${common[@]}" --calls 1000 >/dev/null 2>&1
items() { curl -fsS "http://$H/metrics" | awk '/^ringlimit_items_per_call_sum/ { print $2 }'; }
callgrind_control -z $VPID >/dev/null 2>&1
before=$(items)
"$NODE" bench "${common[@]}" --calls "$N" >/dev/null 2>&1
after=$(items)
callgrind_control -d items $VPID >/dev/null 2>&1
kill $VPID; wait $VPID 2>/dev/null || true
for f in "$OUT"/callgrind.out.*.[0-9]*; do
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  decisions=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%d", a - b }')
  echo "$((total / decisions)) instructions per decision, $decisions decisions ($f)"
done
