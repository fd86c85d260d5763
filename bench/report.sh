#!/usr/bin/env bash
# Prints BENCHMARKS.md (Markdown) from a results file written by bench/run.sh:
#   bench/report.sh [bench/results/latest.json] > BENCHMARKS.md
set -euo pipefail

RESULTS=${1:-$(dirname "${BASH_SOURCE[0]}")/results/latest.json}
[ -f "$RESULTS" ] || { echo "bench/report.sh: $RESULTS is missing (run bench/run.sh)" >&2; exit 1; }

jq -r '
  def commas: if length > 3 then (.[:-3] | commas) + "," + .[-3:] else . end;
  def n0: if . == null then "–" elif . < 0 then "-" + (- . | n0) else (round | tostring | commas) end;
  def us2: if . == null then "–" else ((. * 100 | round) / 100 | tostring) end;
  def x2: if . == null then "–" else ((. * 100 | round) / 100 | tostring) + "×" end;
  def ratio($a; $b): if ($b // 0) > 0 and $a != null then $a / $b else null end;
  . as $r
  | ($r.scenarios | map(select(.name == "redis_1"))[0].decisions_per_sec) as $redis
  | ($r.scenarios | map(select(.name == "floor_1"))[0].decisions_per_sec) as $floor
  | ($r.scenarios | map(select(.name == "single_1"))[0].decisions_per_sec) as $single
  | [
    "# Benchmarks",
    "",
    "Measured by `bench/run.sh` on \($r.machine.date) at commit `\($r.machine.git_rev)`: every system on this one machine, over loopback, with the same client (\($r.settings.connections) connections, \($r.settings.concurrency) calls in flight, \($r.settings.keys | n0) keys, \($r.settings.time) per scenario after a \($r.settings.warmup) warm-up). The client runs on the same cores as the servers, so absolute numbers are lower than on separate machines; the ratios are what the targets are about. Raw results: `bench/results/latest.json`; this file is generated from it by `bench/report.sh`.",
    "",
    "## Machine",
    "",
    "| | |",
    "| --- | --- |",
    "| CPU | \($r.machine.nproc) × \($r.machine.cpu) |",
    "| memory | \(($r.machine.memory_kb / 1048576 * 10 | round) / 10) GiB |",
    "| kernel | \($r.machine.kernel) |",
    "| rustc | \($r.machine.rustc) |",
    "| Redis | \($r.machine.redis) |",
    "| date | \($r.machine.date) |",
    "",
    "## Targets",
    "",
    "| | target | measured |",
    "| --- | --- | --- |",
    ($r.targets[] | "| \(if .pass == null then "➖ not needed" elif .pass then "✅" else "❌" end) | \(.target) | \(if .value == null then "–" elif .kind == "min" then (.value | x2) else (.value | n0) end) |"),
    "",
    "## Scenarios",
    "",
    "| scenario | calls/s | decisions/s | p50 µs | p99 µs | errors | server CPU µs per decision | decisions/s vs Redis+Lua | vs floor | vs single node |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ($r.scenarios[] | "| \(.description) | \(.calls_per_sec | n0) | \(.decisions_per_sec | n0) | \(.p50_us | n0) | \(.p99_us | n0) | \(.errors | n0) | \(.server_cpu_us_per_decision | us2) | \(ratio(.decisions_per_sec; $redis) | x2) | \(ratio(.decisions_per_sec; $floor) | x2) | \(ratio(.decisions_per_sec; $single) | x2) |"),
    "",
    "Server CPU is the user and system time of the server processes (all three nodes in the 3-node scenarios) read from `/proc/PID/stat` around the run, warm-up included, divided by the decisions at the run'\''s rate over the same wall time: the fairest figure on a machine whose two cores the client shares.",
    "",
    (if $r.three_nodes_key_shares != null then
      "In the 3-node scenarios the nodes own \($r.three_nodes_key_shares | map(. * 100 | round | tostring + " %") | join(" / ")) of the bench'\''s keys (`ringlimit ring` over this run'\''s peers): Gubernator'\''s ring (FNV-1, 512 points per peer) is uneven on loopback addresses that differ in a few digits, and the ports change from run to run.", ""
    else empty end),
    (if $r.c_clients != null then
      "## C client against C client",
      "",
      "One node driven by h2load (nghttp2'\''s HTTP/2 load generator, C) sending a prepared `GetRateLimits` call, next to Redis with the Lua token bucket driven by redis-benchmark (C), each with \($r.c_clients.clients) connections and one call in flight on each, \($r.c_clients.seconds_per_run) s per run (`bench/c-clients.sh`). h2load sends the same body every time, so ringlimit'\''s calls all carry the same keys (k0, or k0…k99); redis-benchmark draws one of \($r.settings.keys | n0) keys per call. The run fails unless the node'\''s own counters show every call answered OK.",
      "",
      "| system | items per call | calls/s | decisions/s | p50 µs | p99 µs | server CPU µs per decision | decisions/s vs Redis+Lua |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ($r.c_clients.runs[] | "| \(if .name == "floor_1" then "floor: no-op tonic server (h2load)" elif .tool == "h2load" then "ringlimit (h2load)" else "Redis \($r.c_clients.redis) + Lua (redis-benchmark)" end) | \(.items) | \(.calls_per_sec | n0) | \(.decisions_per_sec | n0) | \(.p50_us | n0) | \(.p99_us | n0) | \(.server_cpu_us_per_decision | us2) | \(ratio(.decisions_per_sec; ($r.c_clients.runs | map(select(.tool == "redis-benchmark"))[0].decisions_per_sec)) | x2) |"),
      ""
    else empty end),
    "## Latency under load",
    "",
    "| measurement | rate (calls/s) | achieved calls/s | p50 µs | p99 µs |",
    "| --- | ---: | ---: | ---: | ---: |",
    "| one node, open loop at half its peak | \($r.latency.half_peak_direct.rate | n0) | \($r.latency.half_peak_direct.calls_per_sec | n0) | \($r.latency.half_peak_direct.p50_us | n0) | \($r.latency.half_peak_direct.p99_us | n0) |",
    "| 3 nodes, all calls to one node (2/3 of keys owned elsewhere), open loop at half the single-node peak | \($r.latency.half_peak_forwarded.rate | n0) | \($r.latency.half_peak_forwarded.calls_per_sec | n0) | \($r.latency.half_peak_forwarded.p50_us | n0) | \($r.latency.half_peak_forwarded.p99_us | n0) |",
    (if $r.latency.low_load_direct != null then "| 3 nodes, one call in flight to one node, a key it owns (direct) | closed loop | \($r.latency.low_load_direct.calls_per_sec | n0) | \($r.latency.low_load_direct.p50_us | n0) | \($r.latency.low_load_direct.p99_us | n0) |" else empty end),
    "| 3 nodes, one call in flight to one node, a key another node owns (every call forwarded) | closed loop | \($r.latency.low_load_forwarded.calls_per_sec | n0) | \($r.latency.low_load_forwarded.p50_us | n0) | \($r.latency.low_load_forwarded.p99_us | n0) |",
    (if $r.latency.low_load_direct != null then "", "The peer hop at low load (forwarded p50 − direct p50): **\(($r.latency.low_load_forwarded.p50_us - $r.latency.low_load_direct.p50_us) | n0) µs**." else empty end),
    (if $r.latency.tcp_round_trip != null then "", "The floor of the hop in the same minute: one loopback TCP round trip between two threads that sleep while they wait (`examples/tcp_pingpong.rs`, 64 bytes each way, 20,000 round trips): p50 **\($r.latency.tcp_round_trip.p50_us | n0) µs**, p99 \($r.latency.tcp_round_trip.p99_us | n0) µs. A forwarded call makes one more such round trip than a direct one." else empty end),
    (if $r.latency.hop_floors != null then "", "The floors of the hop, the next minute, one call in flight to a no-op gRPC server: straight p50 \($r.latency.hop_floors.noop_direct_p50_us | n0) µs; through a byte relay (`examples/tcp_relay.rs`: one more process and round trip, no protocol) **+\(($r.latency.hop_floors.tcp_relay_p50_us - $r.latency.hop_floors.noop_direct_p50_us) | n0) µs**; through a no-op HTTP/2 relay (`examples/h2_relay.rs`: each call read and made again with the h2 crate, no work) **+\(($r.latency.hop_floors.h2_relay_p50_us - $r.latency.hop_floors.noop_direct_p50_us) | n0) µs**. Single runs; `bench/hop-floor.sh` alternates all of them with the hop round by round (bench/analysis.md)." else empty end),
    "",
    "## Memory and key count",
    "",
    "One node (`GUBER_CACHE_SIZE` = 2 × the keys) after a warm-up on 1,000 keys, then loaded with one ordered pass of 100-item calls over \($r.memory.target_keys | n0) keys (`ringlimit bench --distribution sequential`); keys held are `gubernator_cache_size`.",
    "",
    "| | |",
    "| --- | ---: |",
    "| keys held before / after loading | \($r.memory.keys_before | n0) / \($r.memory.keys_after | n0) |",
    "| RSS before / after (VmRSS) | \(($r.memory.rss_before_kb / 1024 * 10 | round) / 10) MiB / \(($r.memory.rss_after_kb / 1024 * 10 | round) / 10) MiB |",
    "| **bytes per key** | **\($r.memory.bytes_per_key | n0)** |",
    "| decisions/s, 1 item per call, over 1,000 keys | \($r.memory.decisions_per_sec_1k_keys | n0) (p99 \($r.memory.p99_us_1k_keys | n0) µs) |",
    "| decisions/s, 1 item per call, over \($r.memory.target_keys | n0) keys | \($r.memory.decisions_per_sec_1m_keys | n0) (p99 \($r.memory.p99_us_1m_keys | n0) µs) |",
    "",
    "## Throughput and p99 latency",
    "",
    "![throughput vs p99 latency](docs/bench.png)",
    "",
    "Open-loop runs at 25, 50 and 75 % of each system'\''s closed-loop peak (\($r.settings.sweep_time) each), and the peak itself. redis-benchmark has no rate setting: the Redis curve varies the number of clients instead (closed loop).",
    "",
    "| system | offered | decisions/s | p50 µs | p99 µs |",
    "| --- | ---: | ---: | ---: | ---: |",
    ($r.curves[] | .system as $s | .points[] | "| \($s) | \(if .offered != null then (.offered | n0) + " calls/s" elif .clients != null then "\(.clients) clients" else "peak" end) | \(.decisions_per_sec | n0) | \(.p50_us | n0) | \(.p99_us | n0) |"),
    "",
    (if any($r.scenarios[]; .raw.series != null) then
      "## Second by second",
      "",
      "![decisions and p99 latency per second of each run](docs/bench-series.png)",
      "",
      "Each scenario run by `ringlimit bench`, second by second through its measured \($r.settings.time) (the warm-up is not shown): decisions answered in the second (log scale) and the p99 latency of the calls answered in it (to about 1 %). A steady run is flat; a drop or a spike is a stall (a flush, a rebalance, the machine busy elsewhere) that percentiles over the whole run average away. From the `series` of `ringlimit bench --json` (kept in `bench/results/latest.json` in each scenario as `raw.series`).",
      "",
      ([$r.scenarios[] | select(.raw.series != null)] | if length > 0 then
        "| scenario | seconds | decisions/s: lowest second | highest second | p99 µs: best second | worst second |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        (.[] | (.raw.series) as $p | "| \(.description) | \($p | length) | \([$p[].decisions] | min | n0) | \([$p[].decisions] | max | n0) | \([$p[].p99_us | select(. != null)] | min | n0) | \([$p[].p99_us | select(. != null)] | max | n0) |"),
        ""
      else empty end)
    else empty end),
    "## Commands",
    "",
    "Run with `bench/run.sh` (`BENCH_TIME=3s bench/run.sh` for a quick run). Each server was started on free loopback ports (ringlimit nodes with `GUBER_PEER_DISCOVERY_TYPE=static GUBER_PEERS=… GUBER_LOG_LEVEL=warn`), then:",
    "",
    "```",
    ($r.commands[]),
    "```",
    ""
  ] | .[]
' "$RESULTS"

# The hand-written analysis of the run (why each missed target is missed, with the profiles).
ANALYSIS=$(dirname "${BASH_SOURCE[0]}")/analysis.md
if [ -f "$ANALYSIS" ]; then
  cat "$ANALYSIS"
fi
