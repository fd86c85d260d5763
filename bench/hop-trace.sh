#!/usr/bin/env bash
# The timeline of one call at low load, across processes: bench/hop.sh's three static-peer nodes
# of NODE_BIN on loopback, one call in flight to node B (KIND=forwarded: a key another node owns;
# KIND=direct: a key B owns), and the kernel's tracepoints for 0.2 s in the middle of the run
# (sched_switch, sched_wakeup, writev entry, recvfrom exit). bench/hop-trace.py then prints each
# segment's p50: the client's write to B's read, B's work, the peer leg's wake-up, the owner's
# work, and back. Tracing slows every step; compare segments, not totals.
#
#   bench/hop-trace.sh NODE_BIN [KIND=forwarded]      (ports 19100-19121; needs root and tracefs)
#
# tracefs is mounted if it is not (`mount -t tracefs nodev /sys/kernel/tracing`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_BIN=$1; KIND=${2:-forwarded}
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
T=/sys/kernel/tracing
[ -e "$T/trace" ] || mount -t tracefs nodev "$T"
WORK=$(mktemp -d)
pids=()
cleanup() {
  echo 0 > "$T/tracing_on"; echo > "$T/set_event"
  kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/hop-nodes.sh
. "$ROOT/bench/hop-nodes.sh"
start_hop_nodes "$NODE_BIN" "$WORK"
pick_hop_names
if [ "$KIND" = direct ]; then name=$DIRECT_NAME; else name=$FORWARD_NAME; fi
"$LOAD" bench --warmup 1s --json --target "$B" --connections 1 --concurrency 1 --items 1 --keys 1 \
  --name "$name" --time 4s >"$WORK/bench.json" &
client=$!
sleep 2
echo > "$T/trace"
echo mono > "$T/trace_clock"
echo 8192 > "$T/buffer_size_kb"
echo "sched:sched_switch sched:sched_wakeup syscalls:sys_enter_writev syscalls:sys_exit_recvfrom" > "$T/set_event"
echo 1 > "$T/tracing_on"
sleep 0.2
echo 0 > "$T/tracing_on"
# Which threads are whose: the nodes A, B, C, then the client.
for pid in "${pids[@]}" "$client"; do echo "$(ls "/proc/$pid/task" | tr '\n' ' ')"; done >"$WORK/tasks"
cp "$T/trace" "$WORK/trace"
wait "$client"
echo "$KIND: $(jq -r '"\(.calls_per_sec | floor) calls/s, p50 \(.latency_us.p50) us (the whole run, 0.2 s of it traced)"' "$WORK/bench.json")"
python3 "$ROOT/bench/hop-trace.py" "$WORK/tasks" "$WORK/trace"
