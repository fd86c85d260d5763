#!/usr/bin/env bash
# Benchmarks ringlimit on this machine, in one go, against two baselines, and writes BENCHMARKS.md,
# bench/results/latest.json, docs/bench.png and docs/bench-series.png.
#
#   bench/run.sh                  every scenario, BENCH_TIME=10s each (about 4 to 5 minutes)
#   BENCH_TIME=3s bench/run.sh    a quick run
#
# Everything runs on 127.0.0.1 on free ports, with the same client concurrency everywhere:
#   1. one node, 1 item per call          2. one node, 100 items per call
#   1b. the same node answering Envoy's ShouldRateLimit, 1 descriptor per call (GUBER_RLS_CONFIG)
#   3. 3 nodes (static peers), 1 item per call, the client's connections spread over the 3 nodes
#      (two thirds of the items are forwarded to their owner)
#   4. 3 nodes, GLOBAL behavior           5. the floor: a no-op gRPC server (examples/noop_server.rs)
#   6. Redis 7 with a Lua token bucket (bench/token_bucket.lua) by EVALSHA, driven by redis-benchmark
#   6b. C client against C client (bench/c-clients.sh): h2load on one node (1 and 100 items per
#      call) next to redis-benchmark on Redis, 50 connections with one call in flight each
#   7. memory: one node with 1,000,000 live keys: RSS per key, and decisions/s there vs at 1,000 keys
# Every scenario reports the servers' CPU time per decision (/proc/PID/stat).
# then open-loop rate sweeps (25/50/75 % of each system's peak) for the latency/throughput plot, the
# p99 at half the single-node peak (direct and through a node that forwards), and the forwarded p50
# at low load (concurrency 1).
#
# Settings (environment): BENCH_TIME (10s), BENCH_SWEEP_TIME (half of BENCH_TIME, at least 2s),
# BENCH_WARMUP (1s), BENCH_CONCURRENCY (64), BENCH_CONNECTIONS (4), BENCH_KEYS (10000),
# BENCH_MEM_KEYS (1000000), CARGO_TARGET_DIR (target), BENCH_NO_BUILD=1 (use the built binaries).
# Needs: cargo, and on Debian/Ubuntu installs what is missing (redis-server, redis-tools, jq, curl,
# nghttp2-client for h2load).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_TIME=${BENCH_TIME:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
CONNECTIONS=${BENCH_CONNECTIONS:-4}
KEYS=${BENCH_KEYS:-10000}
MEM_KEYS=${BENCH_MEM_KEYS:-1000000}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=$ROOT/bench/results
# Redis bucket: 1000 tokens per minute per key, so (as with ringlimit's) nearly every call is under.
REDIS_LIMIT=1000
REDIS_WINDOW_MS=60000

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

# Seconds in a duration like 10s, 500ms or 1m.
secs_of() {
  case $1 in
    *ms) awk -v v="${1%ms}" 'BEGIN { print v / 1000 }' ;;
    *s) echo "${1%s}" ;;
    *m) awk -v v="${1%m}" 'BEGIN { print v * 60 }' ;;
    *) echo "$1" ;;
  esac
}
TIME_S=$(secs_of "$BENCH_TIME")
SWEEP_TIME=${BENCH_SWEEP_TIME:-$(awk -v t="$TIME_S" 'BEGIN { s = t / 2; if (s < 2) s = 2; printf "%gs", s }')}

# ---------------------------------------------------------------------------------------------
# Dependencies and build

install_missing() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "please install: ${missing[*]} (no apt-get on this machine)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The Debian package starts a Redis on 6379; this script uses its own on a free port.
}

install_missing
"$ROOT/scripts/install-deps"

if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
  [ -f examples/noop_server.rs ] || die "examples/noop_server.rs is missing (the floor of scenario 5)"
  say "building (release)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --bin ringlimit --example noop_server --example bench_plot \
    --example tcp_pingpong --example tcp_relay --example h2_relay
fi
BIN=$TARGET_DIR/release/ringlimit
NOOP=$TARGET_DIR/release/examples/noop_server
PLOT=$TARGET_DIR/release/examples/bench_plot
PINGPONG=$TARGET_DIR/release/examples/tcp_pingpong
TCP_RELAY=$TARGET_DIR/release/examples/tcp_relay
H2_RELAY=$TARGET_DIR/release/examples/h2_relay
for f in "$BIN" "$NOOP" "$PLOT" "$PINGPONG" "$TCP_RELAY" "$H2_RELAY"; do [ -x "$f" ] || die "$f is missing: build it first"; done
"$BIN" bench --help >/dev/null 2>&1 ||
  die "'ringlimit bench' is missing from $BIN (the load generator this script drives); no report written"

# ---------------------------------------------------------------------------------------------
# Processes, ports, cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringlimit-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  if [ -n "${BENCH_KEEP_WORK:-}" ]; then say "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops the given processes (started by this script) and forgets them.
stop() {
  local pid keep=() p
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    [[ " $* " == *" $p "* ]] || keep+=("$p")
  done
  PIDS=("${keep[@]}")
}

USED_PORTS=" "
# free_port VAR: a loopback port nobody listens on, not handed out before, into VAR.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return
    fi
  done
}

wait_tcp() { # wait_tcp PORT PID NAME
  local i
  for i in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited at start (log: $WORK/$3.log): $(tail -5 "$WORK/$3.log" 2>/dev/null)"
    sleep 0.1
    : "$i"
  done
  die "$3 did not listen on 127.0.0.1:$1 within 20s"
}

wait_healthy() { # wait_healthy HTTP_PORT PID NAME: until /v1/HealthCheck says healthy
  local i
  for i in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$1/v1/HealthCheck" 2>/dev/null | grep -Eq '"status" *: *"healthy"'; then return 0; fi
    kill -0 "$2" 2>/dev/null || die "$3 exited at start (log: $WORK/$3.log): $(tail -5 "$WORK/$3.log" 2>/dev/null)"
    sleep 0.1
    : "$i"
  done
  die "$3 was not healthy on 127.0.0.1:$1 within 20s: $(curl -sS "http://127.0.0.1:$1/v1/HealthCheck" 2>&1)"
}

LAST_PID=
# start_node NAME GRPC_PORT HTTP_PORT PEERS CACHE_SIZE: a ringlimit node, listening; its pid in
# LAST_PID (wait_healthy once all peers are up).
start_node() {
  local name=$1 grpc=$2 http=$3 peers=$4 cache=$5 discovery=static
  [ -n "$peers" ] || discovery=none
  GUBER_GRPC_ADDRESS=127.0.0.1:$grpc GUBER_HTTP_ADDRESS=127.0.0.1:$http \
    GUBER_PEER_DISCOVERY_TYPE=$discovery GUBER_PEERS=$peers GUBER_LOG_LEVEL=warn \
    GUBER_CACHE_SIZE=$cache GUBER_RLS_CONFIG=${RLS_CONFIG:-} "$BIN" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_tcp "$grpc" "$LAST_PID" "$name"
  wait_tcp "$http" "$LAST_PID" "$name"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cache_size() { # cache_size HTTP_PORT: the node's gubernator_cache_size
  curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^gubernator_cache_size / { printf "%d\n", $2 }'
}

# ---------------------------------------------------------------------------------------------
# Running the load and recording results

COMMANDS=$WORK/commands.txt
SCENARIOS=$WORK/scenarios.jsonl
CURVES=$WORK/curves.jsonl
: >"$COMMANDS"
: >"$SCENARIOS"
: >"$CURVES"

# The command line as run, with the binary's path shortened, for BENCHMARKS.md.
log_command() {
  local line
  line=$(printf '%q ' "$@")
  line=${line//"$TARGET_DIR"\/release\/examples\//}
  line=${line//"$TARGET_DIR"\/release\//}
  line=${line//\\,/,}
  printf '%s\n' "${line% }" >>"$COMMANDS"
}

# rl_bench OUT ARGS...: runs `ringlimit bench ARGS --json` into $WORK/OUT.json and checks it.
rl_bench() {
  local out=$1
  shift
  local cmd=("$BIN" bench --warmup "$BENCH_WARMUP" --json "$@")
  log_command "${cmd[@]}"
  local ticks_before started
  ticks_before=$(server_ticks)
  started=$(date +%s.%N)
  if ! "${cmd[@]}" >"$WORK/$out.json" 2>"$WORK/$out.err"; then
    die "ringlimit bench failed ($out): $(tail -20 "$WORK/$out.err")"
  fi
  add_server_cpu "$out" "$ticks_before" "$started"
  jq -e '(.calls_per_sec | type == "number") and (.decisions_per_sec | type == "number") and (.latency_us.p99 | type == "number")' \
    "$WORK/$out.json" >/dev/null 2>&1 ||
    die "ringlimit bench ($out) printed no usable JSON: $(head -c 2000 "$WORK/$out.json")"
  local errors
  errors=$(jq '[.errors // {} | to_entries[].value] | add // 0' "$WORK/$out.json")
  if [ "$errors" != 0 ]; then say "warning: $out: $errors errors: $(jq -c '.errors' "$WORK/$out.json")"; fi
  say "$out: $(jq -r '"\(.calls_per_sec | floor) calls/s, \(.decisions_per_sec | floor) decisions/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us"' "$WORK/$out.json")"
}

# The servers of the scenario running now (SERVER_PIDS, space-separated): their CPU time is read
# from /proc/PID/stat around each run, the fairest figure on a machine whose cores the client shares.
SERVER_PIDS=""
TICKS_PER_SEC=$(getconf CLK_TCK)
server_ticks() { # user + system clock ticks of SERVER_PIDS so far
  local pid total=0
  for pid in $SERVER_PIDS; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
  echo "$total"
}
# add_server_cpu OUT TICKS_BEFORE STARTED: adds server_cpu_us_per_decision to $WORK/OUT.json. The
# window includes the warm-up, so decisions are the run's rate over the whole wall time.
add_server_cpu() {
  [ -n "$SERVER_PIDS" ] || return 0
  local ticks wall
  ticks=$(($(server_ticks) - $2))
  wall=$(awk -v a="$3" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  jq --argjson ticks "$ticks" --argjson hz "$TICKS_PER_SEC" --argjson wall "$wall" \
    '.server_cpu_us_per_decision = (if .decisions_per_sec > 0 then ($ticks / $hz * 1e6) / (.decisions_per_sec * $wall) else null end)' \
    "$WORK/$1.json" >"$WORK/$1.cpu.json" && mv "$WORK/$1.cpu.json" "$WORK/$1.json"
}

# scenario NAME SYSTEM DESCRIPTION OUT: records $WORK/OUT.json as a scenario.
scenario() {
  jq -c --arg name "$1" --arg system "$2" --arg desc "$3" '{
      name: $name, system: $system, description: $desc,
      calls_per_sec, decisions_per_sec, p50_us: .latency_us.p50, p99_us: .latency_us.p99,
      server_cpu_us_per_decision,
      errors: ([.errors // {} | to_entries[].value] | add // 0), raw: .
    }' "$WORK/$4.json" >>"$SCENARIOS"
}

val() { jq -r "$2" "$WORK/$1.json"; } # val OUT JQ_FILTER

# sweep SYSTEM PEAK_CALLS_PER_SEC PEAK_OUT ARGS...: open-loop runs at 25, 50 and 75 % of the peak,
# plus the closed-loop peak itself, recorded as SYSTEM's curve. The 50 % run is $WORK/<slug>_r50.json.
sweep() {
  local system=$1 peak=$2 peak_out=$3
  shift 3
  local slug pct rate points=()
  slug=$(printf '%s' "$system" | tr -c 'a-zA-Z0-9' '_')
  for pct in 25 50 75; do
    rate=$(awk -v p="$peak" -v f="$pct" 'BEGIN { r = int(p * f / 100); if (r < 1) r = 1; print r }')
    rl_bench "${slug}_r$pct" --time "$SWEEP_TIME" --rate "$rate" "$@"
    points+=("$(jq -c --argjson offered "$rate" '{offered: $offered, decisions_per_sec, calls_per_sec, p50_us: .latency_us.p50, p99_us: .latency_us.p99}' "$WORK/${slug}_r$pct.json")")
  done
  points+=("$(jq -c '{offered: null, decisions_per_sec, calls_per_sec, p50_us: .latency_us.p50, p99_us: .latency_us.p99}' "$WORK/$peak_out.json")")
  printf '%s\n' "${points[@]}" | jq -sc --arg system "$system" '{system: $system, points: .}' >>"$CURVES"
}

COMMON=(--connections "$CONNECTIONS" --concurrency "$CONCURRENCY" --items 1 --keys "$KEYS")

# ---------------------------------------------------------------------------------------------
# 1, 2: one node

free_port G1
free_port H1
# The RLS scenario's domain: one rule on the descriptor key the bench sends, as large a limit as
# GetRateLimits' default, so both answer UNDER and do the same counting work.
RLS_CONFIG=$WORK/rls.yaml
printf 'domain: bench\ndescriptors:\n  - key: key\n    rate_limit: {unit: minute, requests_per_unit: 4000000000}\n' >"$RLS_CONFIG"
start_node single "$G1" "$H1" "" 1000000
RLS_CONFIG=
SINGLE_PID=$LAST_PID
SERVER_PIDS=$SINGLE_PID
wait_healthy "$H1" "$SINGLE_PID" single
say "one node on 127.0.0.1:$G1"
rl_bench single_1 --target "127.0.0.1:$G1" "${COMMON[@]}" --time "$BENCH_TIME"
scenario single_1 "ringlimit single node" "one node, 1 item per call" single_1
rl_bench single_100 --target "127.0.0.1:$G1" --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" \
  --items 100 --keys "$KEYS" --time "$BENCH_TIME"
scenario single_100 "ringlimit single node (100 items)" "one node, 100 items per call" single_100
rl_bench rls_1 --target "127.0.0.1:$G1" "${COMMON[@]}" --rls-domain bench --time "$BENCH_TIME"
scenario rls_1 "ringlimit RLS (ShouldRateLimit)" "one node, Envoy ShouldRateLimit, 1 descriptor per call" rls_1
say "RLS ShouldRateLimit / GetRateLimits decisions/s (1 per call): $(awk -v a="$(val rls_1 .decisions_per_sec)" -v b="$(val single_1 .decisions_per_sec)" 'BEGIN { printf "%.2f", a / b }')"
SINGLE_PEAK=$(val single_1 .calls_per_sec)
sweep "ringlimit single node" "$SINGLE_PEAK" single_1 --target "127.0.0.1:$G1" "${COMMON[@]}"
cp "$WORK/ringlimit_single_node_r50.json" "$WORK/half_peak_direct.json"
stop "$SINGLE_PID"

# ---------------------------------------------------------------------------------------------
# 3, 4: three nodes

free_port GA; free_port HA; free_port GB; free_port HB; free_port GC; free_port HC
PEERS=127.0.0.1:$GA,127.0.0.1:$GB,127.0.0.1:$GC
start_node node_a "$GA" "$HA" "$PEERS" 1000000; PID_A=$LAST_PID
start_node node_b "$GB" "$HB" "$PEERS" 1000000; PID_B=$LAST_PID
start_node node_c "$GC" "$HC" "$PEERS" 1000000; PID_C=$LAST_PID
wait_healthy "$HA" "$PID_A" node_a
wait_healthy "$HB" "$PID_B" node_b
wait_healthy "$HC" "$PID_C" node_c
SERVER_PIDS="$PID_A $PID_B $PID_C"
for h in "$HA" "$HB" "$HC"; do
  curl -fsS "http://127.0.0.1:$h/v1/HealthCheck" | jq -e '(.peer_count // .peerCount) == 3' >/dev/null ||
    die "the 3 nodes do not see each other: $(curl -sS "http://127.0.0.1:$h/v1/HealthCheck")"
done
say "3 nodes: $PEERS"
# The share of the bench's keys each node owns. Gubernator's ring (FNV-1, 512 points per peer) is
# uneven on addresses that differ in a few digits, and the ports change from run to run, so the
# 3-node figures are read with it.
seq 0 $((KEYS - 1)) | sed 's/^/k/' | "$BIN" ring --peers "$PEERS" --name bench --json |
  jq --arg peers "$PEERS" 'length as $n | . as $owned |
    [$peers | split(",")[] as $peer | ($owned | map(select(.owner == $peer)) | length) / $n]' \
    >"$WORK/key_shares.json"
say "3 nodes: shares of the keys: $(jq -r 'map(. * 100 | round | tostring + " %") | join(" / ")' "$WORK/key_shares.json")"
rl_bench cluster_1 --targets "$PEERS" "${COMMON[@]}" --time "$BENCH_TIME"
scenario cluster_1 "ringlimit 3 nodes" "3 nodes, 1 item per call, connections over all 3 (2/3 forwarded)" cluster_1
rl_bench cluster_global --targets "$PEERS" "${COMMON[@]}" --behavior global --time "$BENCH_TIME"
scenario cluster_global "ringlimit 3 nodes GLOBAL" "3 nodes, GLOBAL, 1 item per call, connections over all 3" cluster_global
sweep "ringlimit 3 nodes" "$(val cluster_1 .calls_per_sec)" cluster_1 --targets "$PEERS" "${COMMON[@]}"
# Through one node: with keys spread over 3 owners, 2/3 of the items go to another node.
HALF_SINGLE=$(awk -v p="$SINGLE_PEAK" 'BEGIN { r = int(p / 2); if (r < 1) r = 1; print r }')
rl_bench half_peak_forwarded --target "127.0.0.1:$GB" "${COMMON[@]}" --rate "$HALF_SINGLE" --time "$BENCH_TIME"
# Low load, one call in flight to node B: a key B owns (direct) and a key another node owns
# (every call forwarded). The limit names are picked with `ringlimit ring` so that `NAME_k0` lands
# where wanted; the difference of the two medians is the cost of the peer hop.
owner_of() { "$BIN" ring --peers "$PEERS" --name "$1" k0 | cut -f2; }
DIRECT_NAME=""; FORWARD_NAME=""
for i in $(seq 0 99); do
  owner=$(owner_of "lowload$i")
  if [ "$owner" = "127.0.0.1:$GB" ]; then
    [ -n "$DIRECT_NAME" ] || DIRECT_NAME="lowload$i"
  else
    [ -n "$FORWARD_NAME" ] || FORWARD_NAME="lowload$i"
  fi
  [ -z "$DIRECT_NAME" ] || [ -z "$FORWARD_NAME" ] || break
done
[ -n "$DIRECT_NAME" ] && [ -n "$FORWARD_NAME" ] || die "no limit name found that node B owns and one it does not"
rl_bench low_load_direct --target "127.0.0.1:$GB" --connections 1 --concurrency 1 --items 1 \
  --keys 1 --name "$DIRECT_NAME" --time "$BENCH_TIME"
rl_bench low_load_forwarded --target "127.0.0.1:$GB" --connections 1 --concurrency 1 --items 1 \
  --keys 1 --name "$FORWARD_NAME" --time "$BENCH_TIME"
# The hop's floors, the next minute (bench/hop-floor.sh repeats this in alternating rounds): one
# call in flight to a no-op gRPC server straight, through a byte relay (examples/tcp_relay.rs: one
# more process and round trip, no protocol) and through a no-op HTTP/2 relay
# (examples/h2_relay.rs: each call read and made again with the h2 crate, no work).
free_port GF; free_port GT; free_port GH
"$NOOP" --address "127.0.0.1:$GF" >"$WORK/floor_noop.log" 2>&1 &
FLOOR_NOOP_PID=$!
PIDS+=("$FLOOR_NOOP_PID")
wait_tcp "$GF" "$FLOOR_NOOP_PID" floor_noop
"$TCP_RELAY" --listen "127.0.0.1:$GT" --upstream "127.0.0.1:$GF" >"$WORK/tcp_relay.log" 2>&1 &
TCP_RELAY_PID=$!
PIDS+=("$TCP_RELAY_PID")
"$H2_RELAY" --listen "127.0.0.1:$GH" --upstream "127.0.0.1:$GF" >"$WORK/h2_relay.log" 2>&1 &
H2_RELAY_PID=$!
PIDS+=("$H2_RELAY_PID")
wait_tcp "$GT" "$TCP_RELAY_PID" tcp_relay
wait_tcp "$GH" "$H2_RELAY_PID" h2_relay
for floor in "relay_none:$GF" "relay_tcp:$GT" "relay_h2:$GH"; do
  rl_bench "${floor%%:*}" --target "127.0.0.1:${floor##*:}" --connections 1 --concurrency 1 --items 1 \
    --keys 1 --name floor --time "$BENCH_TIME"
done
stop "$TCP_RELAY_PID" "$H2_RELAY_PID" "$FLOOR_NOOP_PID"
say "hop floors: no-op direct p50 $(val relay_none .latency_us.p50) us, through tcp_relay $(val relay_tcp .latency_us.p50) us, through h2_relay $(val relay_h2 .latency_us.p50) us"
# The machine's floor for one round trip, in the same minute: one loopback TCP round trip between
# two threads that sleep while they wait (examples/tcp_pingpong.rs).
log_command "$PINGPONG" --json 20000
"$PINGPONG" --json 20000 >"$WORK/tcp_round_trip.json"
say "loopback TCP round trip: $(jq -r '"p50 \(.p50_us) us, p99 \(.p99_us) us"' "$WORK/tcp_round_trip.json")"
stop "$PID_A" "$PID_B" "$PID_C"

# ---------------------------------------------------------------------------------------------
# 5: the floor

free_port GN
log_command "$NOOP" --address "127.0.0.1:$GN"
"$NOOP" --address "127.0.0.1:$GN" >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
SERVER_PIDS=$NOOP_PID
wait_tcp "$GN" "$NOOP_PID" noop
rl_bench floor_1 --target "127.0.0.1:$GN" "${COMMON[@]}" --time "$BENCH_TIME"
scenario floor_1 "floor (no-op gRPC server)" "no-op gRPC server, 1 item per call" floor_1
sweep "floor (no-op gRPC server)" "$(val floor_1 .calls_per_sec)" floor_1 --target "127.0.0.1:$GN" "${COMMON[@]}"
stop "$NOOP_PID"

# ---------------------------------------------------------------------------------------------
# 6: Redis 7 + Lua token bucket

free_port RP
log_command redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no
redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" >/dev/null 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
SERVER_PIDS=$REDIS_PID
wait_tcp "$RP" "$REDIS_PID" redis
REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
SHA=$(redis-cli -h 127.0.0.1 -p "$RP" SCRIPT LOAD "$(cat "$ROOT/bench/token_bucket.lua")")
[[ $SHA =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD of bench/token_bucket.lua failed: $SHA"
probe=$(redis-cli -h 127.0.0.1 -p "$RP" EVALSHA "$SHA" 1 rl:probe 2 60000 | tr '\n' ' ')
[ "$probe" = "0 1 0 " ] || die "EVALSHA token bucket returned '$probe', wanted '0 1 0 '"

# redis_bench OUT CLIENTS REQUESTS: redis-benchmark --csv into $WORK/OUT.json (the ringlimit bench
# shape: calls_per_sec, decisions_per_sec, latency_us.{p50,p99,...}).
redis_bench() {
  local out=$1 clients=$2 n=$3
  local cmd=(redis-benchmark -h 127.0.0.1 -p "$RP" -c "$clients" -n "$n" -r "$KEYS" --csv
    EVALSHA "$SHA" 1 rl:__rand_int__ "$REDIS_LIMIT" "$REDIS_WINDOW_MS" 1)
  log_command "${cmd[@]}"
  local ticks_before started
  ticks_before=$(server_ticks)
  started=$(date +%s.%N)
  "${cmd[@]}" >"$WORK/$out.csv" 2>"$WORK/$out.err" || die "redis-benchmark failed: $(tail -5 "$WORK/$out.err")"
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  local header
  header=$(grep -m1 '^"test"' "$WORK/$out.csv" || true)
  [ "$header" = '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"' ] ||
    die "redis-benchmark --csv: unexpected header '$header' (redis-benchmark $REDIS_VERSION)"
  grep '^"EVALSHA' "$WORK/$out.csv" | tail -1 | tr -d '"' | awk -F, -v n="$n" -v c="$clients" '{
      printf "{\"calls\":%d,\"decisions\":%d,\"seconds\":%.3f,\"calls_per_sec\":%s,\"decisions_per_sec\":%s,", n, n, n / $2, $2, $2
      printf "\"latency_us\":{\"avg\":%.0f,\"p50\":%.0f,\"p95\":%.0f,\"p99\":%.0f,\"max\":%.0f},", $3 * 1000, $5 * 1000, $6 * 1000, $7 * 1000, $8 * 1000
      printf "\"errors\":{},\"config\":{\"tool\":\"redis-benchmark\",\"clients\":%d,\"requests\":%d}}\n", c, n
    }' >"$WORK/$out.json"
  jq -e '.decisions_per_sec > 0' "$WORK/$out.json" >/dev/null || die "redis-benchmark: no result parsed from $WORK/$out.csv"
  add_server_cpu "$out" "$ticks_before" "$started"
  # redis-benchmark counts error replies (a script error, NOSCRIPT) as requests: there must be none.
  local errors
  errors=$(redis-cli -h 127.0.0.1 -p "$RP" INFO stats | tr -d '\r' | awk -F: '/^total_error_replies:/ { print $2 }')
  [ "$errors" = 0 ] || die "Redis answered $errors errors: $(redis-cli -h 127.0.0.1 -p "$RP" INFO errorstats | tr -d '\r' | tr '\n' ' ')"
  say "$out: $(jq -r '"\(.calls_per_sec | floor) calls/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us"' "$WORK/$out.json")"
}
# redis-benchmark counts requests, not time: calibrate, then size the run to BENCH_TIME.
redis_bench redis_calibrate "$CONCURRENCY" 20000
redis_requests() { # requests for about SECONDS at the calibrated rate
  awk -v r="$(val redis_calibrate .calls_per_sec)" -v s="$1" 'BEGIN { n = int(r * s); if (n < 10000) n = 10000; print n }'
}
redis_bench redis_1 "$CONCURRENCY" "$(redis_requests "$TIME_S")"
scenario redis_1 "Redis $REDIS_VERSION + Lua" "Redis $REDIS_VERSION, EVALSHA token bucket (bench/token_bucket.lua), 1 key per call" redis_1
# redis-benchmark has no open-loop rate: the curve is a sweep of client counts (closed loop).
SWEEP_S=$(secs_of "$SWEEP_TIME")
redis_points=()
for c in 1 4 16; do
  [ "$c" -lt "$CONCURRENCY" ] || continue
  # Fewer clients, lower rate: half the requests of SWEEP_TIME at the peak rate.
  redis_bench "redis_c$c" "$c" "$(redis_requests "$(awk -v s="$SWEEP_S" 'BEGIN { print s / 2 }')")"
  redis_points+=("$(jq -c --argjson c "$c" '{clients: $c, decisions_per_sec, calls_per_sec, p50_us: .latency_us.p50, p99_us: .latency_us.p99}' "$WORK/redis_c$c.json")")
done
redis_points+=("$(jq -c --argjson c "$CONCURRENCY" '{clients: $c, decisions_per_sec, calls_per_sec, p50_us: .latency_us.p50, p99_us: .latency_us.p99}' "$WORK/redis_1.json")")
printf '%s\n' "${redis_points[@]}" | jq -sc --arg system "Redis $REDIS_VERSION + Lua" '{system: $system, points: ., closed_loop: true}' >>"$CURVES"
stop "$REDIS_PID"
SERVER_PIDS=""

# ---------------------------------------------------------------------------------------------
# 6b: C client against C client: h2load on one node, redis-benchmark on Redis (bench/c-clients.sh)

say "C clients: h2load against one node, redis-benchmark against Redis"
log_command bench/c-clients.sh
BIN=$BIN C_TIME=$TIME_S KEYS=$KEYS "$ROOT/bench/c-clients.sh" "$WORK/c_clients.json" ||
  die "bench/c-clients.sh failed"

# ---------------------------------------------------------------------------------------------
# 7: memory and throughput at 1,000,000 keys

free_port GM
free_port HM
start_node memory "$GM" "$HM" "" $((MEM_KEYS * 2))
MEM_PID=$LAST_PID
wait_healthy "$HM" "$MEM_PID" memory
rl_bench mem_1k --target "127.0.0.1:$GM" --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" \
  --items 1 --keys 1000 --time "$BENCH_TIME"
RSS_BEFORE=$(rss_kb "$MEM_PID")
KEYS_BEFORE=$(cache_size "$HM")
say "memory: RSS ${RSS_BEFORE} kB with $KEYS_BEFORE keys; loading $MEM_KEYS keys"
# One pass over the key space in order: every key is created exactly once.
rl_bench mem_load --target "127.0.0.1:$GM" --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" \
  --items 100 --keys "$MEM_KEYS" --distribution sequential --calls $((MEM_KEYS / 100)) --warmup 0s
held=$(cache_size "$HM")
say "memory: $held keys held after loading"
[ "$held" -ge $((MEM_KEYS * 99 / 100)) ] ||
  say "warning: memory: only $held of $MEM_KEYS keys held after loading"
RSS_AFTER=$(rss_kb "$MEM_PID")
KEYS_AFTER=$(cache_size "$HM")
rl_bench mem_1m --target "127.0.0.1:$GM" --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" \
  --items 1 --keys "$MEM_KEYS" --time "$BENCH_TIME"
KEYS_END=$(cache_size "$HM")
stop "$MEM_PID"
jq -n --argjson rss_before_kb "$RSS_BEFORE" --argjson rss_after_kb "$RSS_AFTER" \
  --argjson keys_before "$KEYS_BEFORE" --argjson keys_after "$KEYS_AFTER" --argjson keys_end "$KEYS_END" \
  --argjson target_keys "$MEM_KEYS" --slurpfile k1 "$WORK/mem_1k.json" --slurpfile m1 "$WORK/mem_1m.json" '{
    target_keys: $target_keys, keys_before: $keys_before, keys_after: $keys_after, keys_at_end: $keys_end,
    rss_before_kb: $rss_before_kb, rss_after_kb: $rss_after_kb,
    bytes_per_key: (if $keys_after > $keys_before then (($rss_after_kb - $rss_before_kb) * 1024 / ($keys_after - $keys_before)) else null end),
    decisions_per_sec_1k_keys: $k1[0].decisions_per_sec, p99_us_1k_keys: $k1[0].latency_us.p99,
    decisions_per_sec_1m_keys: $m1[0].decisions_per_sec, p99_us_1m_keys: $m1[0].latency_us.p99
  }' >"$WORK/memory.json"
say "memory: $(jq -c '{bytes_per_key, decisions_per_sec_1k_keys, decisions_per_sec_1m_keys}' "$WORK/memory.json")"

# ---------------------------------------------------------------------------------------------
# Results: bench/results/latest.json, docs/bench.png, docs/bench-series.png, BENCHMARKS.md

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$CPU" ] || CPU=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')
[ -n "$CPU" ] || CPU=$(uname -m)
MEM_TOTAL_KB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
RUSTC=$(rustc --version 2>/dev/null || echo unknown)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$RESULTS_DIR" "$ROOT/docs"
jq -n \
  --arg cpu "$CPU" --argjson nproc "$(nproc)" --argjson mem_kb "$MEM_TOTAL_KB" --arg kernel "$(uname -sr)" \
  --arg rustc "$RUSTC" --arg date "$DATE" --arg rev "$GIT_REV" --arg redis "$REDIS_VERSION" \
  --arg time "$BENCH_TIME" --arg sweep_time "$SWEEP_TIME" --arg warmup "$BENCH_WARMUP" \
  --argjson concurrency "$CONCURRENCY" --argjson connections "$CONNECTIONS" --argjson keys "$KEYS" \
  --slurpfile scenarios "$SCENARIOS" --slurpfile curves "$CURVES" --slurpfile memory "$WORK/memory.json" \
  --slurpfile hpd "$WORK/half_peak_direct.json" --slurpfile hpf "$WORK/half_peak_forwarded.json" \
  --slurpfile llf "$WORK/low_load_forwarded.json" --slurpfile lld "$WORK/low_load_direct.json" \
  --slurpfile tcp "$WORK/tcp_round_trip.json" --slurpfile rn "$WORK/relay_none.json" \
  --slurpfile rt "$WORK/relay_tcp.json" --slurpfile rh "$WORK/relay_h2.json" \
  --slurpfile cc "$WORK/c_clients.json" --slurpfile shares "$WORK/key_shares.json" \
  --rawfile commands "$COMMANDS" '
  def s($n): $scenarios | map(select(.name == $n))[0];
  def ratio($a; $b): if ($b // 0) > 0 then $a / $b else null end;
  ($memory[0]) as $mem |
  {
    version: 1,
    machine: {cpu: $cpu, nproc: $nproc, memory_kb: $mem_kb, kernel: $kernel, rustc: $rustc, date: $date,
              git_rev: $rev, redis: $redis},
    settings: {time: $time, sweep_time: $sweep_time, warmup: $warmup, concurrency: $concurrency,
               connections: $connections, keys: $keys},
    scenarios: $scenarios,
    curves: $curves,
    latency: {
      half_peak_direct: {rate: ($hpd[0].config.rate // null), calls_per_sec: $hpd[0].calls_per_sec, p50_us: $hpd[0].latency_us.p50, p99_us: $hpd[0].latency_us.p99},
      half_peak_forwarded: {rate: ($hpf[0].config.rate // null), calls_per_sec: $hpf[0].calls_per_sec, p50_us: $hpf[0].latency_us.p50, p99_us: $hpf[0].latency_us.p99},
      low_load_forwarded: {calls_per_sec: $llf[0].calls_per_sec, p50_us: $llf[0].latency_us.p50, p99_us: $llf[0].latency_us.p99},
      low_load_direct: {calls_per_sec: $lld[0].calls_per_sec, p50_us: $lld[0].latency_us.p50, p99_us: $lld[0].latency_us.p99},
      tcp_round_trip: $tcp[0],
      hop_floors: {noop_direct_p50_us: $rn[0].latency_us.p50, tcp_relay_p50_us: $rt[0].latency_us.p50,
                   h2_relay_p50_us: $rh[0].latency_us.p50}
    },
    memory: $mem,
    c_clients: $cc[0],
    three_nodes_key_shares: $shares[0],
    commands: ($commands | split("\n") | map(select(length > 0)))
  }
  ' | jq -f "$ROOT/bench/targets.jq" >"$RESULTS_DIR/latest.json"
say "wrote bench/results/latest.json"

# docs/bench-series.png: decisions and p99 second by second through each scenario run by
# `ringlimit bench` (the `series` of its --json report, kept in each scenario's `raw`).
"$PLOT" "$RESULTS_DIR/latest.json" "$ROOT/docs/bench.png" "$ROOT/docs/bench-series.png" >/dev/null
say "wrote docs/bench.png and docs/bench-series.png"

"$ROOT/bench/report.sh" "$RESULTS_DIR/latest.json" >"$ROOT/BENCHMARKS.md"
say "wrote BENCHMARKS.md"
jq -r '.targets[] | "\(if .pass == null then "----" elif .pass then "PASS" else "FAIL" end)  \(.target): \(.value)"' "$RESULTS_DIR/latest.json" >&2
