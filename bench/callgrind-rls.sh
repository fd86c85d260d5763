#!/usr/bin/env bash
# Instructions per call on the node (callgrind), GetRateLimits with 1 item against Envoy's
# ShouldRateLimit with 1 descriptor: the figure behind issue 14's RLS target, repeatable on a busy
# machine where decisions/s are not. The node runs under valgrind; counters are zeroed after a
# warm-up of both kinds, then dumped after N calls of each. Per-function differences between the
# two dumps: `bench/cgdiff.py OUT/callgrind.out.*.1 OUT/callgrind.out.*.2 N`.
#
#   bench/callgrind-rls.sh target/profiling/ringlimit /tmp/cg [N=3000]
#
# Needs valgrind (callgrind_control, callgrind_annotate) and curl. Loopback only; ports 18950-1.
# Run-to-run spread is several percent (the runtime's polling depends on timing); compare the
# ratio of the two kinds within one run.
set -euo pipefail
NODE=$1; OUT=$2; N=${3:-3000}
mkdir -p "$OUT"; rm -f "$OUT"/callgrind.out.*
cfg=$OUT/rls.yaml
printf 'domain: bench\ndescriptors:\n  - key: key\n    rate_limit: {unit: minute, requests_per_unit: 4000000000}\n' >"$cfg"
G=127.0.0.1:18951; H=127.0.0.1:18950
GUBER_GRPC_ADDRESS=$G GUBER_HTTP_ADDRESS=$H GUBER_PEER_DISCOVERY_TYPE=none GUBER_LOG_LEVEL=warn \
  GUBER_CACHE_SIZE=1000000 GUBER_RLS_CONFIG=$cfg \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" "$NODE" >"$OUT/node.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fsS "http://$H/readyz" >/dev/null 2>&1 && break; sleep 1; done
common=(--target "$G" --connections 2 --concurrency 8 --items 1 --keys 1000)
"$NODE" bench "${common[@]}" --calls 2000 >/dev/null 2>&1
"$NODE" bench "${common[@]}" --calls 2000 --rls-domain bench >/dev/null 2>&1
callgrind_control -z $VPID >/dev/null 2>&1
"$NODE" bench "${common[@]}" --calls "$N" >/dev/null 2>&1
callgrind_control -d grl $VPID >/dev/null 2>&1
callgrind_control -z $VPID >/dev/null 2>&1
"$NODE" bench "${common[@]}" --calls "$N" --rls-domain bench >/dev/null 2>&1
callgrind_control -d rls $VPID >/dev/null 2>&1
kill $VPID; wait $VPID 2>/dev/null || true
declare -A per
for f in "$OUT"/callgrind.out.*.[0-9]*; do
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  kind=$(grep -m1 '^desc: Trigger' "$f" | awk '{print $NF}')
  per[$kind]=$((total / N))
  echo "$kind: $((total / N)) instructions per call ($f)"
done
awk -v g="${per[grl]}" -v r="${per[rls]}" 'BEGIN { printf "GetRateLimits / ShouldRateLimit instructions: %.3f\n", g / r }'
