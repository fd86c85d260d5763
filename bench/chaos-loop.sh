#!/usr/bin/env bash
# Runs examples/chaos N times (owner-failure policy `error`, short phases, debug logs for handoff)
# and prints, per run, the rolling restart's row and how many join waits expired. A rare lost
# count shows only over many runs; each run keeps its nodes' logs and, for every key over the
# oracle, its answers around the loss (over-keys.txt; every answer with CHAOS_DUMP_OVER_KEYS=1) in
# OUTDIR/runN.
#
#   bench/chaos-loop.sh target/release/ringlimit 16 /tmp/chaos [VAR=value ...]
#
# The chaos example must be built in the same target dir (cargo build --release --example chaos;
# CHAOS=path overrides). Needs etcd (ETCD, default /usr/bin/etcd). About 30 s a run; loopback only.
set -u
BIN=$1; N=$2; OUT=$3; shift 3
CHAOS=${CHAOS:-$(dirname "$BIN")/examples/chaos}
ETCD=${ETCD:-/usr/bin/etcd}
for i in $(seq 1 "$N"); do
  d=$OUT/run$i; rm -rf "$d"; mkdir -p "$d"
  env "$@" RUST_LOG=info,ringlimit::handoff=debug,ringlimit::tasks=debug timeout 600 "$CHAOS" \
    --binary "$BIN" --etcd "$ETCD" --policy error --steady-secs 3 --etcd-outage-secs 2 \
    --lease-ttl-secs 5 --out "$d/out.md" --log-dir "$d" >"$d/chaos.log" 2>&1
  row=$(grep "rolling restart" "$d/out.md" | awk -F'|' '{print "over:" $8 " admitted/oracle:" $9 " worst:" $10}')
  warns=$(grep -h "did not complete their handoff" "$d"/node*.log 2>/dev/null | wc -l)
  echo "run $i: $row join-wait-expired-warnings: $warns"
done
