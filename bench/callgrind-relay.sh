#!/usr/bin/env bash
# Instructions per relayed call on the no-op HTTP/2 relay (examples/h2_relay.rs, callgrind), one
# call in flight, in front of examples/noop_server.rs: the instruction floor of a forwarding node
# that speaks HTTP/2, to set beside `bench/callgrind-forward.sh`'s figure for ringlimit's
# forwarding node.
#
#   cargo build --profile profiling --example h2_relay --example noop_server
#   bench/callgrind-relay.sh /tmp/cg-relay [N=3000]
#
# Needs valgrind (callgrind_control, callgrind_annotate) and a release `ringlimit` (the load).
# Loopback only; ports 19250-1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$1; N=${2:-3000}
EXAMPLES=$ROOT/target/profiling/examples
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
mkdir -p "$OUT"; rm -f "$OUT"/callgrind.out.*
"$EXAMPLES/noop_server" --address 127.0.0.1:19250 >"$OUT/noop.log" 2>&1 &
NOOP=$!
sleep 0.5
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" "$EXAMPLES/h2_relay" \
  --listen 127.0.0.1:19251 --upstream 127.0.0.1:19250 >"$OUT/relay.log" 2>&1 &
V=$!
trap 'kill $NOOP $V 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19251) 2>/dev/null && break; sleep 0.1; done
common=(--target 127.0.0.1:19251 --connections 1 --concurrency 1 --items 1 --keys 1 --name floor)
"$LOAD" bench "${common[@]}" --calls 1000 >/dev/null 2>&1
callgrind_control -z $V >/dev/null 2>&1
"$LOAD" bench "${common[@]}" --calls "$N" >/dev/null 2>&1
callgrind_control -d relay $V >/dev/null 2>&1
for f in "$OUT"/callgrind.out.*.[0-9]*; do
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  echo "$((total / N)) instructions per relayed call on the h2 relay ($f)"
done
