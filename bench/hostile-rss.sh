#!/usr/bin/env bash
# A node's peak memory under hostile calls that are refused for their size: 16 connections send
# 64 calls of one 1 MiB message of empty repeated elements (two bytes each), then the node's peak
# RSS (VmHWM) is read from /proc. Without counting first, every element was decoded before the
# call was refused.
#
#   bench/hostile-rss.sh NODE_BIN [items|descriptors]     (ports 19300-19301)
#   items: GetRateLimits with 524,280 empty items; descriptors: ShouldRateLimit with as many
#   empty descriptors.
set -euo pipefail
NODE_BIN=$1; KIND=${2:-items}
WORK=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
case $KIND in
  items) path=/pb.gubernator.V1/GetRateLimits; element='\x0a\x00' ;;
  descriptors) path=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit; element='\x12\x00' ;;
  *) echo "kind: items or descriptors" >&2; exit 2 ;;
esac
# The gRPC prefix (uncompressed, big-endian length) and a message just under the default 1 MiB limit.
python3 - "$WORK/body" "$element" <<'PY'
import sys
element = sys.argv[2].encode().decode('unicode_escape').encode('latin-1')
message = element * ((1024 * 1024 - 16) // len(element))
with open(sys.argv[1], 'wb') as f:
    f.write(b'\x00' + len(message).to_bytes(4, 'big') + message)
PY
GUBER_GRPC_ADDRESS=127.0.0.1:19301 GUBER_HTTP_ADDRESS=127.0.0.1:19300 GUBER_LOG_LEVEL=error \
  "$NODE_BIN" >"$WORK/node.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:19300/readyz >/dev/null 2>&1 && break; sleep 0.1; done
before=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
h2load -c 16 -m 1 -n 64 -d "$WORK/body" -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:19301$path" | grep -E "^requests:|^status codes:"
after=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
echo "$KIND: peak RSS ${before} kB at start, ${after} kB after 64 calls of 1 MiB"
