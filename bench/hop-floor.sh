#!/usr/bin/env bash
# The peer hop against its floors, alternated round by round in the same minutes: one call in
# flight from `ringlimit bench`, 1 item per call, to
#   - a no-op gRPC server (examples/noop_server.rs) straight, then through two relays in front
#     of it: examples/tcp_relay.rs (bytes copied: one more process woken twice, one more loopback
#     round trip, no protocol) and examples/h2_relay.rs (each call read and made again over
#     HTTP/2 with the `h2` crate, as a forwarding node must, with no decoding and no work);
#   - 3 static-peer nodes of NODE_BIN (as bench/hop.sh): node B with a key it owns (direct) and
#     with a key another node owns (forwarded).
# Each round runs the five for SECS seconds each; a hop is a p50 minus its direct p50. Prints
# every round and the median hops. On this VM one minute can be twice as slow as the next, so
# only hops of the same round are compared.
#
#   cargo build --release --example noop_server --example tcp_relay --example h2_relay
#   bench/hop-floor.sh NODE_BIN ROUNDS SECS        (ports 19100-19121, 19200-19202)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_BIN=$1; ROUNDS=${2:-6}; SECS=${3:-2}
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
EXAMPLES=$ROOT/target/release/examples
WORK=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
"$EXAMPLES/noop_server" --address 127.0.0.1:19200 >/dev/null &
pids+=($!)
sleep 0.3
"$EXAMPLES/tcp_relay" --listen 127.0.0.1:19201 --upstream 127.0.0.1:19200 >/dev/null &
pids+=($!)
"$EXAMPLES/h2_relay" --listen 127.0.0.1:19202 --upstream 127.0.0.1:19200 >/dev/null &
pids+=($!)
# shellcheck source=bench/hop-nodes.sh
. "$ROOT/bench/hop-nodes.sh"
start_hop_nodes "$NODE_BIN" "$WORK"
pick_hop_names
direct=$DIRECT_NAME; forwarded=$FORWARD_NAME
p50() {
  "$LOAD" bench --warmup 0.5s --json --target "$1" --connections 1 --concurrency 1 --items 1 --keys 1 \
    --name "$2" --time "${SECS}s" | jq -r '.latency_us.p50'
}
echo "round: noop direct, tcp_relay, h2_relay | node direct, forwarded | hops: tcp_relay h2_relay node (us)"
for round in $(seq "$ROUNDS"); do
  nd=$(p50 127.0.0.1:19200 floor); tr=$(p50 127.0.0.1:19201 floor); hr=$(p50 127.0.0.1:19202 floor)
  d=$(p50 "$B" "$direct"); f=$(p50 "$B" "$forwarded")
  echo "$round: $nd $tr $hr | $d $f | $((tr - nd)) $((hr - nd)) $((f - d))" | tee -a "$WORK/rounds"
done
awk -F'|' '{ split($3, h, " "); t[NR] = h[1]; r[NR] = h[2]; n[NR] = h[3] }
  function median(a, k,   i, j, x) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  END { k = NR; printf "median hops: tcp_relay %s us, h2_relay %s us, node %s us (%d rounds)\n", median(t, k), median(r, k), median(n, k), k }' "$WORK/rounds"
