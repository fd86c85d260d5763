#!/usr/bin/env bash
# C client against C client: one ringlimit node driven by h2load (nghttp2's HTTP/2 load generator,
# sending a prepared gRPC call), the same for the floor (examples/noop_server.rs: tonic answering
# without doing anything), next to Redis with a Lua token bucket driven by redis-benchmark,
# each with the same clients and calls in flight, on this machine's loopback. For each it reports
# calls/s, decisions/s, p50/p99 and the server's CPU time per decision (from /proc/PID/stat: the
# fairest figure on a shared machine, where the client takes cores from the server).
#
#   bench/c-clients.sh OUT.json        (run.sh calls it; it can be run alone after a build)
#
# Settings (environment): C_TIME (10, seconds per run), C_CLIENTS (50 connections, one call in
# flight on each), BIN (target/release/ringlimit), NOOP (target/release/examples/noop_server),
# KEYS (10000, Redis's key space).
#
# What differs between the two, on purpose or by the tools:
# - h2load sends the same body on every call, so ringlimit's calls all carry the same key(s)
#   (k0 for 1 item; k0..k99 for 100 items); redis-benchmark draws one of KEYS keys per call.
# - h2load counts HTTP status 200 as success, but gRPC puts its status in the trailers: the run
#   fails unless the node's own counters show every call answered OK with every item decided.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: bench/c-clients.sh OUT.json}
C_TIME=${C_TIME:-10}
C_CLIENTS=${C_CLIENTS:-50}
KEYS=${KEYS:-10000}
BIN=${BIN:-$ROOT/target/release/ringlimit}
NOOP=${NOOP:-$ROOT/target/release/examples/noop_server}
TICKS=$(getconf CLK_TCK)

say() { printf '[c-clients %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench/c-clients.sh: %s\n' "$*" >&2; exit 1; }

command -v h2load >/dev/null 2>&1 || {
  command -v apt-get >/dev/null 2>&1 || die "please install h2load (Debian: nghttp2-client)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  say "installing nghttp2-client (h2load)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nghttp2-client >/dev/null
}
for tool in redis-server redis-benchmark redis-cli jq curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (bench/run.sh installs it)"
done
[ -x "$BIN" ] || die "$BIN is missing: build it first"
[ -x "$NOOP" ] || die "$NOOP is missing: build it first"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringlimit-c-clients.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_tcp() { # wait_tcp PORT PID
  local i
  for i in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || die "the server on port $1 exited"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1 after 10 s"
}
# cpu_ticks PID: user + system time of the process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# ---------------------------------------------------------------------------------------------
# ringlimit under h2load

G=$(free_port); H=$(free_port)
GUBER_GRPC_ADDRESS=127.0.0.1:$G GUBER_HTTP_ADDRESS=127.0.0.1:$H GUBER_PEER_DISCOVERY_TYPE=none \
  GUBER_LOG_LEVEL=warn GUBER_CACHE_SIZE=1000000 "$BIN" >"$WORK/node.log" 2>&1 &
NODE=$!
SERVER=$NODE
PIDS+=("$NODE")
wait_tcp "$G" "$NODE"
wait_tcp "$H" "$NODE"

# counter NAME LABEL_MATCH: the sum of the node's samples of NAME whose labels contain LABEL_MATCH.
counter() {
  curl -fsS "http://127.0.0.1:$H/metrics" |
    awk -v name="$1" -v want="$2" 'index($0, name "{") == 1 && index($0, want) { s += $NF } END { printf "%d\n", s }'
}

# h2load_run NAME ITEMS [floor]: one run of C_TIME seconds after a short warm-up against the server
# on port $G (process $SERVER); writes $WORK/NAME.json. The node's counters check every answer;
# the floor has none (it answers every item UNDER_LIMIT by construction).
h2load_run() {
  local name=$1 items=$2 floor=${3:-}
  local body=$WORK/$name.body
  "$BIN" bench --items "$items" --keys "$items" --distribution sequential --write-body "$body"
  local cmd=(h2load -c "$C_CLIENTS" -m 1 -t 1 -d "$body" -H 'content-type: application/grpc'
    -H 'te: trailers' "http://127.0.0.1:$G/pb.gubernator.V1/GetRateLimits")
  "${cmd[@]}" -n $((C_CLIENTS * 100)) >/dev/null 2>&1 || die "h2load warm-up failed"
  local ok_before=0 decided_before=0 errors_before=0 ticks_before ticks_after
  if [ -z "$floor" ]; then
    ok_before=$(counter gubernator_grpc_request_counts 'status="success"')
    decided_before=$(counter gubernator_getratelimit_counter '')
    errors_before=$(counter gubernator_check_error_counter '')
  fi
  ticks_before=$(cpu_ticks "$SERVER")
  "${cmd[@]}" -D "$C_TIME" --log-file "$WORK/$name.log" >"$WORK/$name.out" 2>&1 ||
    die "h2load failed: $(tail -5 "$WORK/$name.out")"
  ticks_after=$(cpu_ticks "$SERVER")
  local seconds done_ succeeded ok decided errors
  seconds=$(sed -n 's/^finished in \([0-9.]*\)s.*/\1/p' "$WORK/$name.out")
  done_=$(sed -n 's/^requests: .* \([0-9]*\) done.*/\1/p' "$WORK/$name.out")
  succeeded=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$WORK/$name.out")
  [ -n "$seconds" ] && [ -n "$succeeded" ] || die "h2load printed no result: $(cat "$WORK/$name.out")"
  [ "$succeeded" = "$done_" ] || die "h2load: $succeeded of $done_ calls succeeded"
  if [ -z "$floor" ]; then
    ok=$(($(counter gubernator_grpc_request_counts 'status="success"') - ok_before))
    decided=$(($(counter gubernator_getratelimit_counter '') - decided_before))
    errors=$(($(counter gubernator_check_error_counter '') - errors_before))
    # h2load may leave a few calls of the run unanswered when it stops: the node counts them too.
    [ "$ok" -ge "$succeeded" ] || die "h2load: $succeeded calls succeeded but the node answered only $ok OK"
    [ "$decided" -ge $((succeeded * items)) ] || die "h2load: the node decided $decided items for $succeeded calls of $items"
    [ "$errors" = 0 ] || die "h2load: the node answered $errors items with an error"
  fi
  # Column 3 of the log is each call's time in microseconds.
  cut -f3 "$WORK/$name.log" | sort -n >"$WORK/$name.lat"
  jq -n --arg name "$name" --argjson items "$items" --argjson calls "$succeeded" --argjson seconds "$seconds" \
    --argjson ticks $((ticks_after - ticks_before)) --argjson hz "$TICKS" \
    --argjson p50 "$(awk '{ a[NR] = $1 } END { print a[int(NR * 0.50) + 1] + 0 }' "$WORK/$name.lat")" \
    --argjson p99 "$(awk '{ a[NR] = $1 } END { print a[int(NR * 0.99) + 1] + 0 }' "$WORK/$name.lat")" \
    --arg command "$(printf '%q ' "${cmd[@]}" -D "$C_TIME")" '{
      name: $name, tool: "h2load", items: $items, calls: $calls, seconds: $seconds,
      calls_per_sec: ($calls / $seconds), decisions_per_sec: ($calls * $items / $seconds),
      p50_us: $p50, p99_us: $p99,
      server_cpu_seconds: ($ticks / $hz),
      server_cpu_us_per_decision: ($ticks / $hz * 1e6 / ($calls * $items)),
      command: ($command | sub("/[^ ]*/ringlimit-c-clients[^ /]*/"; ""))
    }' >"$WORK/$name.json"
  say "$name: $(jq -r '"\(.decisions_per_sec | floor) decisions/s, p50 \(.p50_us) us, p99 \(.p99_us) us, \(.server_cpu_us_per_decision * 1000 | floor) ns CPU/decision"' "$WORK/$name.json")"
}

say "ringlimit $("$BIN" --version 2>/dev/null | head -1) on 127.0.0.1:$G; h2load, $C_CLIENTS connections, 1 call in flight each, ${C_TIME}s"
h2load_run ringlimit_1 1
h2load_run ringlimit_100 100
kill -TERM "$NODE"; wait "$NODE" 2>/dev/null || true

G=$(free_port)
"$NOOP" --address "127.0.0.1:$G" >"$WORK/noop.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
wait_tcp "$G" "$SERVER"
h2load_run floor_1 1 floor
kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Redis + Lua under redis-benchmark

RP=$(free_port)
redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" >/dev/null 2>&1 &
REDIS=$!
PIDS+=("$REDIS")
wait_tcp "$RP" "$REDIS"
SHA=$(redis-cli -h 127.0.0.1 -p "$RP" SCRIPT LOAD "$(cat "$ROOT/bench/token_bucket.lua")")
[[ $SHA =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed: $SHA"
redis_cmd() { # redis_cmd REQUESTS
  redis-benchmark -h 127.0.0.1 -p "$RP" -c "$C_CLIENTS" -n "$1" -r "$KEYS" --csv \
    EVALSHA "$SHA" 1 rl:__rand_int__ 1000 60000 1
}
# redis-benchmark counts requests, not time: a calibration run sizes the measured one.
rate=$(redis_cmd 50000 | grep '^"EVALSHA' | tr -d '"' | cut -d, -f2)
n=$(awk -v r="$rate" -v s="$C_TIME" 'BEGIN { print int(r * s) }')
ticks_before=$(cpu_ticks "$REDIS")
redis_cmd "$n" >"$WORK/redis.csv"
ticks_after=$(cpu_ticks "$REDIS")
errors=$(redis-cli -h 127.0.0.1 -p "$RP" INFO stats | tr -d '\r' | awk -F: '/^total_error_replies:/ { print $2 }')
[ "$errors" = 0 ] || die "Redis answered $errors errors"
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
grep '^"EVALSHA' "$WORK/redis.csv" | tr -d '"' | awk -F, -v n="$n" -v t="$((ticks_after - ticks_before))" -v hz="$TICKS" \
  -v cmd="redis-benchmark -c $C_CLIENTS -n $n -r $KEYS --csv EVALSHA <sha> 1 rl:__rand_int__ 1000 60000 1" '{
    printf "{\"name\":\"redis_1\",\"tool\":\"redis-benchmark\",\"items\":1,\"calls\":%d,\"seconds\":%.3f,", n, n / $2
    printf "\"calls_per_sec\":%s,\"decisions_per_sec\":%s,\"p50_us\":%.0f,\"p99_us\":%.0f,", $2, $2, $5 * 1000, $7 * 1000
    printf "\"server_cpu_seconds\":%.2f,\"server_cpu_us_per_decision\":%.4f,\"command\":\"%s\"}\n", t / hz, t / hz * 1e6 / n, cmd
  }' >"$WORK/redis_1.json"
say "redis_1: $(jq -r '"\(.decisions_per_sec | floor) decisions/s, p50 \(.p50_us) us, p99 \(.p99_us) us, \(.server_cpu_us_per_decision * 1000 | floor) ns CPU/decision"' "$WORK/redis_1.json")"

jq -s --arg redis "$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')" \
  --argjson clients "$C_CLIENTS" --argjson time "$C_TIME" '
  (map({(.name): .}) | add) as $r
  | {clients: $clients, seconds_per_run: $time, redis: $redis, runs: .,
     ratio_1: ($r.ringlimit_1.decisions_per_sec / $r.redis_1.decisions_per_sec),
     ratio_100: ($r.ringlimit_100.decisions_per_sec / $r.redis_1.decisions_per_sec),
     floor_ratio_1: ($r.floor_1.decisions_per_sec / $r.redis_1.decisions_per_sec)}' \
  "$WORK/ringlimit_1.json" "$WORK/ringlimit_100.json" "$WORK/floor_1.json" "$WORK/redis_1.json" >"$OUT"
say "1 item/call: $(jq -r '.ratio_1 * 100 | floor / 100' "$OUT")x Redis+Lua (the floor: $(jq -r '.floor_ratio_1 * 100 | floor / 100' "$OUT")x); 100 items/call: $(jq -r '.ratio_100 * 10 | floor / 10' "$OUT")x"
