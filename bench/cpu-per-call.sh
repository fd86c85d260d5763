#!/usr/bin/env bash
# Server CPU per call, one change at a time: one node of NODE_BIN under h2load (C clients, C=50
# connections, one call in flight each) for SECS seconds after a warm-up, then calls/s and the
# node's user and system CPU per call from /proc/PID/stat. Extra VAR=VALUE arguments go to the
# node's environment (e.g. GUBER_GRPC_RUNTIMES=shared, TOKIO_WORKER_THREADS=1).
#
#   bench/cpu-per-call.sh NODE_BIN ITEMS SECS [VAR=VALUE ...]
#
# Run it alternately for the builds or settings compared, several times: on a shared 2-core VM one
# run moves by tens of percent, the CPU per call much less than calls/s. Ports 18970-18971.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_BIN=$1; ITEMS=$2; SECS=$3; shift 3
LOAD=${LOAD:-$ROOT/target/release/ringlimit}
G=18971; H=18970
WORK=$(mktemp -d)
env "$@" GUBER_GRPC_ADDRESS=127.0.0.1:$G GUBER_HTTP_ADDRESS=127.0.0.1:$H GUBER_PEER_DISCOVERY_TYPE=none \
  GUBER_LOG_LEVEL=warn GUBER_CACHE_SIZE=1000000 "$NODE_BIN" >"$WORK/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$H/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
"$LOAD" bench --items "$ITEMS" --keys "$ITEMS" --distribution sequential --write-body "$WORK/body"
cmd=(h2load -c "${C:-50}" -m 1 -t 1 -d "$WORK/body" -H 'content-type: application/grpc' -H 'te: trailers'
  "http://127.0.0.1:$G/pb.gubernator.V1/GetRateLimits")
"${cmd[@]}" -n 5000 >/dev/null
read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$NODE/stat")
"${cmd[@]}" -D "$SECS" >"$WORK/h2load.out"
read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$NODE/stat")
n=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$WORK/h2load.out")
rps=$(sed -n 's/^finished in [0-9.]*s, \([0-9.]*\) req\/s.*/\1/p' "$WORK/h2load.out")
hz=$(getconf CLK_TCK)
awk -v rps="$rps" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" 'BEGIN {
  printf "calls/s %.0f  user %.1f us/call  sys %.1f us/call  (%d calls)\n", rps, u / hz * 1e6 / n, s / hz * 1e6 / n, n }'
