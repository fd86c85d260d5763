#!/usr/bin/env bash
# The fault script: a 3-node ringlimit cluster with etcd on 127.0.0.1 under steady load, through
#   1. steady load,
#   2. kill -9 of one node and its restart 3 s later,
#   3. a rolling restart of all three nodes (SIGTERM, wait for exit, start, one at a time),
#   4. etcd stopped for 30 s and restarted,
#   5. steady load again,
# once per owner-failure policy, and writes docs/reliability.md: the machine, the command, and per
# phase the client errors by kind and, for watched keys, the hits admitted against an exact oracle.
#
#   bench/chaos.sh                           both policies (about 4 minutes)
#   CHAOS_POLICIES=local bench/chaos.sh      one policy
#
# Settings (environment): CHAOS_POLICIES ("error local"), CHAOS_STEADY_SECS (10),
# CHAOS_ETCD_OUTAGE_SECS (30), CHAOS_LEASE_TTL_SECS (5), CHAOS_OUT (docs/reliability.md),
# CARGO_TARGET_DIR (target), CHAOS_NO_BUILD=1 (use the built binaries), ETCD (/usr/bin/etcd, else
# the etcd on PATH). Needs cargo and etcd (Debian: apt-get install etcd-server). All traffic stays
# on loopback; the load program (examples/chaos.rs) bounds every loop and kills what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

POLICIES=${CHAOS_POLICIES:-error local}
STEADY=${CHAOS_STEADY_SECS:-10}
OUTAGE=${CHAOS_ETCD_OUTAGE_SECS:-30}
TTL=${CHAOS_LEASE_TTL_SECS:-5}
OUT=${CHAOS_OUT:-$ROOT/docs/reliability.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ETCD=${ETCD:-/usr/bin/etcd}
[ -x "$ETCD" ] || ETCD=$(command -v etcd || true)
[ -n "$ETCD" ] && [ -x "$ETCD" ] || { echo "bench/chaos.sh: etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }

if [ "${CHAOS_NO_BUILD:-0}" != 1 ]; then
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --bin ringlimit --example chaos
fi
BIN=$TARGET_DIR/release/ringlimit
CHAOS=$TARGET_DIR/release/examples/chaos

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for policy in $POLICIES; do
  echo "[chaos $(date +%H:%M:%S)] policy $policy" >&2
  timeout 900 "$CHAOS" --binary "$BIN" --etcd "$ETCD" --policy "$policy" \
    --steady-secs "$STEADY" --etcd-outage-secs "$OUTAGE" --lease-ttl-secs "$TTL" \
    --out "$WORK/$policy.md"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
etcd_version=$("$ETCD" --version 2>/dev/null | head -1)
{
  cat <<DOC
# Reliability: owner failure, restarts and etcd outages

This page is written by \`bench/chaos.sh\`; the figures below are from its last run.

- **Machine**: $(nproc) CPUs ($cpu), $mem RAM, $(uname -sr); $etcd_version. The three nodes,
  etcd and the load generator share the machine.
- **Command**: \`CHAOS_POLICIES="$POLICIES" bench/chaos.sh\` (release build; steady phases ${STEADY} s,
  etcd outage ${OUTAGE} s, \`GUBER_ETCD_LEASE_TTL=${TTL}s\`, other settings at their defaults).
- **Run at**: $(date -u +"%Y-%m-%d %H:%M UTC"), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown).

## What the script does

A 3-node cluster (etcd discovery, release binaries, every port on 127.0.0.1) under steady load:
8 client tasks, each sending a \`GetRateLimits\` call with one *watched* item, the same key
with \`GLOBAL\` behaviour under another name, and four background items, then pausing 10 ms (the calls column gives the rate reached on this machine). The client behaves like one behind a
health-checking load balancer: it stops sending to a node the moment the script stops it, and
sends to it again once it answers \`LiveCheck\`. The phases:

1. **steady** load;
2. **kill -9** of node 2, restarted 3 s later on the same address (its etcd key is replaced by the
   new registration; its state is lost);
3. **rolling restart**: each node in turn gets SIGTERM (it deregisters from etcd, drains and exits),
   is started again, and the script waits until all three nodes see three peers;
4. **etcd outage**: etcd is stopped for ${OUTAGE} s and restarted on the same data directory; the
   script waits until all three nodes are registered again;
5. **steady** load again.

**Client errors** count failed calls by gRPC code, and failed items by kind (an item error that
names an unreachable owner is the \`error\` policy at work). **Fallback answers** are items answered
under the \`local\` policy by a node whose owner was unreachable (\`metadata.fallback = "local"\`).

**The oracle.** Each phase has 9 fresh watched token-bucket keys, each with a limit of 100 per
60 s window and about 45 hits/s, so every key reaches its limit within a few seconds. A token
bucket's window starts at the first hit on an expired bucket and lasts the duration, so between the
first hit sent and the last answer received (elapsed time \`T\`) at most \`floor(T / 60 s) + 1\`
windows fit, and a correct limiter admits at most \`100 × (floor(T / 60 s) + 1)\` hits of a key. Every
phase is shorter than the window, so the oracle is exactly 100 per key: a count lost to a crash, a
move or a fallback bucket shows up as hits admitted above it. The table sums the admitted hits and
the oracle over the watched keys and gives the worst key's admitted − oracle (negative: below the
limit).

**GLOBAL keys** get the same oracle. Every node answers them from its own copy and sends the hits
it owes to the owner every \`GUBER_GLOBAL_SYNC_WAIT\`, so even in the steady phase a GLOBAL key can
admit a little more than the limit: at most what the nodes admit between two broadcasts, the bound
of [docs/accuracy.md](accuracy.md). A fault phase shows its own cost as the difference from the
steady rows.

## Results

DOC
  for policy in $POLICIES; do
    cat "$WORK/$policy.md"
    echo
  done
  cat <<'DOC'
## Why limits can be exceeded, and by how much

- **A crashed owner loses its counts.** State lives in the owner's memory; `kill -9` loses it, and
  the key restarts from a full bucket on whichever node owns it next (the restarted node, or a live
  node once the dead one's lease expires). In the window of the crash a key can therefore admit up
  to **one extra limit** (what the dead owner had admitted plus a fresh bucket), under either
  policy. A graceful leave (SIGTERM) does not: the leaving node hands its keys to their new owners
  (`ringlimit.v1.Handoff`, see architecture.md) before it deregisters.
- **`GUBER_OWNER_FAILURE_POLICY=error`** (the default): while the owner is unreachable its items get
  an error naming it, and nothing is admitted for them, so there is no over-admission beyond the
  crash itself. A dead owner is detected on the first refused connection, or after
  `GUBER_PEER_DOWN_THRESHOLD` (3) consecutive failed calls (timeouts), and then its items fail at
  once instead of each waiting for `GUBER_BATCH_TIMEOUT`; it is probed again after
  `GUBER_PEER_DOWN_BACKOFF` (1 s, doubling up to `GUBER_PEER_DOWN_MAX_BACKOFF`, 4 s). After its etcd
  lease TTL at the latest the dead node leaves every ring and its keys are answered by a live owner.
- **`GUBER_OWNER_FAILURE_POLICY=local`**: while the owner is unreachable, each node that receives a
  key answers it from a fallback bucket of its own, which starts full. The bound, per key and per
  window: **admitted ≤ limit × R + limit**, where R is the number of nodes that answered the key
  from a fallback bucket in that window (at most N − 1 in an N-node cluster), and the extra limit is
  what the dead owner admitted before it died. The hits admitted locally are owed to the owner and
  sent with `DRAIN_OVER_LIMIT` every `GUBER_GLOBAL_SYNC_WAIT` (100 ms) once the owner answers again
  (or to the key's new owner once the dead one has left the ring), so after the outage the owner's
  count includes them, and the next windows are exact again. Between the owner's return and the
  arrival of the owed hits (one sync interval plus one probe backoff at most), the returned owner
  starts from a full bucket, which is part of the crash's extra limit above.
- **Client call errors** during the kill phase, when there are any, are calls that were in flight to the node at the
  moment of SIGKILL (their connection is reset); the client then stops sending to it.
- **etcd outage**: the nodes keep the last peer list while etcd is down and keep serving, so an
  outage of etcd alone changes no owner and admits nothing extra; the nodes register again when
  etcd returns.
- **Rolling restart**: each SIGTERM moves the leaving node's keys to the others, and back when it
  returns. Without state handoff the new owner would start those keys from a full bucket (up to
  one extra limit per move and key: +106 on the worst key in this script's run before handoff was
  merged); with handoff the counts move with the keys. A node that restarts faster than
  `GUBER_HANDOFF_DELAY` (50 ms) leaves and comes back between two looks of its peers' handoff
  task; that used to look like no change, so its keys stayed with the peers it had handed them to
  and it started them from zero (up to one extra limit on 4–8 of 9 keys, once `TCP_NODELAY` made
  the restart fast enough; bisected to c1d7d99). Peers now see that it re-entered the list and hand
  its keys back (architecture.md, "A restart quicker than the debounce"; the regression test is
  `a_restart_quicker_than_the_handoff_delay_gets_its_keys_back` in `tests/it/handoff.rs`). GLOBAL
  keys are handed off like the others; what they admit above the oracle here is the same
  sync-interval slack as in the steady rows, not a reset (a reset would show as about +100).
  A key first used during that delay, on the node that owned it while the other was away, used
  to stay behind too and lose its first hits (+2 to +5 on a key in 6 of 30 runs of
  `bench/chaos-loop.sh`; 0 of 16 since); it is now handed back as well (the regression test is
  `a_key_first_used_while_a_peer_restarts_goes_back_to_it`; found with the per-key timelines that
  `examples/chaos --log-dir DIR` writes to `DIR/over-keys.txt` for every key over the oracle).
  Calls that were in flight to the leaving node when it stopped, and items forwarded to it in the
  moment before the others saw it leave, are the errors this phase can show.

## A node without its discovery backend reports itself unhealthy

A node configured for a cluster (etcd or DNS discovery) that cannot reach its backend at start does
not refuse to start: it serves with only itself in its peer list and keeps retrying. But every node
started that way answers every key from its own state, so N such nodes admit up to **N times each
limit**, and nothing but `ringlimit_etcd_registered 0` used to show it. Such a node now reports
itself unhealthy while it serves alone and is not registered in etcd (or has no DNS answer):
`HealthCheck` answers `UNAVAILABLE` (HTTP 503) with a message naming the cause (`not registered in
etcd (<endpoints> unreachable): this node serves alone, ...`), `grpc.health.v1` answers
`NOT_SERVING` (so a Kubernetes readiness probe keeps it out of its Service), and `ringlimit
healthcheck` exits 2. It keeps answering calls meanwhile; only health changes, and it turns healthy
within 250 ms of registering. `GUBER_SERVE_ALONE_HEALTHY=true` keeps the old behaviour for those
who prefer a node that answers alone to no answer.

A node that loses etcd after it registered keeps its last peer list (see the etcd outage above) and
stays healthy as long as that list holds other peers: it is not alone, and an etcd outage must not
take every node out of its Service at once. Recent peer-call failures make `HealthCheck` unhealthy,
as in Gubernator, but not `grpc.health.v1`, for the same reason.
DOC
} > "$OUT"
echo "[chaos $(date +%H:%M:%S)] wrote $OUT" >&2
