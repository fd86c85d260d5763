#!/usr/bin/env bash
# A node's peak memory under hostile calls that are refused for their size: 16 connections send
# 64 calls of one 1 MiB message of empty repeated elements (two bytes each), then the node's peak
# RSS (VmHWM) is read from /proc. Without counting first, every element was decoded before the
# call was refused.
#
#   bench/hostile-rss.sh NODE_BIN [items|descriptors|json-items|json-descriptors|json-entries]
#   (ports 19300-19301) items: gRPC GetRateLimits with 524,280 empty items; descriptors: gRPC
#   ShouldRateLimit with as many empty descriptors; json-items: POST /v1/GetRateLimits with about
#   350,000 empty items (`{},`, three bytes each); json-descriptors: POST /json with as many empty
#   descriptors; json-entries: POST /json with one descriptor of as many empty entries (HTTP/1.1).
set -euo pipefail
NODE_BIN=$1; KIND=${2:-items}
WORK=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
case $KIND in
  items) path=/pb.gubernator.V1/GetRateLimits; element='\x0a\x00' ;;
  descriptors) path=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit; element='\x12\x00' ;;
  json-items) path=/v1/GetRateLimits; field=requests ;;
  json-descriptors) path=/json; field=descriptors ;;
  json-entries) path=/json; field=entries ;;
  *) echo "kind: items, descriptors, json-items, json-descriptors or json-entries" >&2; exit 2 ;;
esac
if [ -n "${field:-}" ]; then
  # A JSON object whose one list of empty objects is just under the default 1 MiB body limit.
  python3 - "$WORK/body" "$field" <<'PY'
import sys
field = sys.argv[2]
count = (1024 * 1024 - 128) // 3
elements = ','.join(['{}'] * count)
with open(sys.argv[1], 'w') as f:
    if field == 'entries':
        f.write('{"domain":"d","descriptors":[{"entries":[%s]}]}' % elements)
    else:
        f.write('{"domain":"d","%s":[%s]}' % (field, elements))
PY
  url=http://127.0.0.1:19300$path; headers=(-H 'content-type: application/json'); protocol=(--h1)
else
  # The gRPC prefix (uncompressed, big-endian length) and a message just under the default 1 MiB
  # limit.
  python3 - "$WORK/body" "$element" <<'PY'
import sys
element = sys.argv[2].encode().decode('unicode_escape').encode('latin-1')
message = element * ((1024 * 1024 - 16) // len(element))
with open(sys.argv[1], 'wb') as f:
    f.write(b'\x00' + len(message).to_bytes(4, 'big') + message)
PY
  url=http://127.0.0.1:19301$path; headers=(-H 'content-type: application/grpc' -H 'te: trailers'); protocol=()
fi
GUBER_GRPC_ADDRESS=127.0.0.1:19301 GUBER_HTTP_ADDRESS=127.0.0.1:19300 GUBER_LOG_LEVEL=error \
  "$NODE_BIN" >"$WORK/node.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:19300/readyz >/dev/null 2>&1 && break; sleep 0.1; done
before=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
h2load "${protocol[@]}" -c 16 -m 1 -n 64 -d "$WORK/body" "${headers[@]}" "$url" |
  grep -E "^requests:|^status codes:"
after=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
echo "$KIND: peak RSS ${before} kB at start, ${after} kB after 64 calls of 1 MiB"
