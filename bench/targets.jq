# The targets of issue 16 (and the earlier ones still tracked), evaluated on the results object
# bench/run.sh builds: `jq -f bench/targets.jq RESULTS`. Kept apart so that a results file can be
# re-evaluated without re-running the benchmarks.
def s($n): .scenarios | map(select(.name == $n))[0];
def ratio($a; $b): if ($b // 0) > 0 and $a != null then $a / $b else null end;
(.memory) as $mem
| (.c_clients.runs // [] | map({(.name): .}) | add // {}) as $cc
| . as $r
| .targets = [
      {target: "1 item/call: decisions/s ≥ 1.0× Redis+Lua (h2load against redis-benchmark)", goal: 1.0, kind: "min",
       value: $r.c_clients.ratio_1},
      {target: "1 item/call, bounded by the gRPC stack: ≥ 0.9× Redis+Lua while ringlimit is at its floor (≥ 0.95× the no-op tonic server under h2load, same run)", goal: 0.9, kind: "min",
       value: (if ($cc.ringlimit_1.decisions_per_sec // 0) >= 0.95 * ($cc.floor_1.decisions_per_sec // 1e18) then $r.c_clients.ratio_1 else null end),
       alternative_to: "1 item/call: decisions/s ≥ 1.0× Redis+Lua (h2load against redis-benchmark)"},
      {target: "100 items/call: decisions/s ≥ 40× Redis+Lua (h2load against redis-benchmark)", goal: 40, kind: "min",
       value: $r.c_clients.ratio_100},
      {target: "3 nodes, 1 item/call over all three: decisions/s ≥ 0.6× one node", goal: 0.6, kind: "min",
       value: ratio($r | s("cluster_1").decisions_per_sec; $r | s("single_1").decisions_per_sec)},
      {target: "forwarded p50 at low load ≤ direct p50 + 60 µs (the hop, µs)", goal: 60, kind: "max",
       value: (if $r.latency.low_load_forwarded.p50_us != null and $r.latency.low_load_direct.p50_us != null
               then $r.latency.low_load_forwarded.p50_us - $r.latency.low_load_direct.p50_us else null end)},
      {target: "p99 at half of the single node's peak, direct ≤ 2 ms (µs)", goal: 2000, kind: "max",
       value: $r.latency.half_peak_direct.p99_us},
      {target: "memory at 1M keys ≤ 120 bytes/key", goal: 120, kind: "max", value: $mem.bytes_per_key},
      {target: "Envoy ShouldRateLimit, 1 descriptor: decisions/s ≥ 0.9× GetRateLimits, 1 item", goal: 0.9, kind: "min",
       value: ratio($r | s("rls_1").decisions_per_sec; $r | s("single_1").decisions_per_sec)},
      {target: "p99 at half of single-node peak, via a non-owner ≤ 2 ms (µs)", goal: 2000, kind: "max",
       value: $r.latency.half_peak_forwarded.p99_us},
      {target: "decisions/s at 1M keys ≥ 0.8× at 1k keys", goal: 0.8, kind: "min",
       value: ratio($mem.decisions_per_sec_1m_keys; $mem.decisions_per_sec_1k_keys)}
    ]
  | .targets |= map(.pass = (if .value == null then false elif .kind == "min" then .value >= .goal else .value <= .goal end))
  # An alternative criterion only counts when the target it stands in for is missed: otherwise its
  # pass is null (shown as not needed).
  | .targets as $all
  | .targets |= map(. as $t
      | if $t.alternative_to != null and any($all[]; .target == $t.alternative_to and .pass)
        then .pass = null else . end)
