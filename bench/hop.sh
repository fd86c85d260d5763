#!/usr/bin/env bash
# The peer hop at low load: 3 static-peer nodes of NODE_BIN on loopback, one call in flight to
# node B, first a key B owns (direct), then a key another node owns (every call forwarded); prints
# both p50/p99 and B's `ringlimit_peer_call_items` (1 item per call when the peer was idle). The
# hop is the difference of the two p50s; the loopback TCP round trip measured right after them
# (examples/tcp_pingpong.rs) is its floor in that minute. LOADED=1 adds a 64-in-flight run over all three nodes,
# with the nodes' CPU per decision and the items per peer call of that run alone.
# Extra VAR=VALUE arguments go to the nodes' environment (e.g. GUBER_GRPC_RUNTIMES=shared).
#
#   bench/hop.sh NODE_BIN SECS [VAR=VALUE ...]      (ports 19100-19121)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_BIN=$1; SECS=$2; shift 2
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
WORK=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
# shellcheck source=bench/hop-nodes.sh
. "$ROOT/bench/hop-nodes.sh"
start_hop_nodes "$NODE_BIN" "$WORK" "$@"
pick_hop_names
direct=$DIRECT_NAME; forwarded=$FORWARD_NAME
for name in "$direct" "$forwarded"; do
  "$LOAD" bench --warmup 1s --json --target "$B" --connections 1 --concurrency 1 --items 1 --keys 1 \
    --name "$name" --time "${SECS}s" |
    jq -r --arg kind "$([ "$name" = "$direct" ] && echo direct || echo forwarded)" \
      '"\($kind): \(.calls_per_sec | floor) calls/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us"'
done
# The machine's floor for the hop in the same minute: one loopback TCP round trip between two
# sleeping threads (`cargo build --release --example tcp_pingpong`; skipped when not built).
PINGPONG=$ROOT/target/release/examples/tcp_pingpong
if [ -x "$PINGPONG" ]; then "$PINGPONG" 20000; fi
# The three nodes' CPU ticks, and their peer calls and items forwarded (sum, count).
ticks() { for pid in "${pids[@]}"; do awk '{ print $14 + $15 }' "/proc/$pid/stat"; done | paste -sd+ | bc; }
peer_items() {
  for i in 0 1 2; do curl -fsS "http://127.0.0.1:191${i}0/metrics"; done |
    awk '/^ringlimit_peer_call_items_sum/ { s += $2 } /^ringlimit_peer_call_items_count/ { c += $2 } END { print s + 0, c + 0 }'
}
if [ -n "${LOADED:-}" ]; then
  "$LOAD" bench --warmup 0s --targets "$PEERS" --connections 4 --concurrency 64 --items 1 --keys 10000 \
    --time 1s >/dev/null
  t0=$(ticks); read -r s0 c0 < <(peer_items)
  "$LOAD" bench --warmup 0s --json --targets "$PEERS" --connections 4 --concurrency 64 --items 1 \
    --keys 10000 --time "${SECS}s" >"$WORK/loaded.json"
  t1=$(ticks); read -r s1 c1 < <(peer_items)
  # Node CPU per decision over the measured run (all three nodes), and the batching under load.
  jq -r --argjson ticks $((t1 - t0)) --argjson hz "$(getconf CLK_TCK)" \
    --argjson items $((s1 - s0)) --argjson calls $((c1 - c0)) \
    '"3 nodes, over all three: \(.decisions_per_sec | floor) decisions/s, p50 \(.latency_us.p50) us, node CPU \($ticks / $hz * 1e6 / .decisions * 10 | round / 10) us per decision, \(if $calls > 0 then ($items / $calls * 100 | round / 100) else 0 end) items per peer call"' \
    "$WORK/loaded.json"
fi
curl -fsS http://127.0.0.1:19110/metrics | grep -E '^ringlimit_peer_call_items_(sum|count)' || true
