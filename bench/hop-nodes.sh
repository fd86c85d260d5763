# Sourced by bench/hop.sh, bench/hop-floor.sh and bench/hop-trace.sh: the three static-peer nodes
# of the low-load hop on loopback (ports 19100-19121), node B the one called, and the two limit
# names it is called with. Expects `pids` (an array the caller kills on exit) and LOAD (a
# `ringlimit` binary for `ring`).

PEERS="127.0.0.1:19101,127.0.0.1:19111,127.0.0.1:19121"
B=127.0.0.1:19111

# start_hop_nodes NODE_BIN LOG_DIR [VAR=VALUE ...]: starts the three nodes (extra VAR=VALUE in
# their environment), their pids appended to `pids`, and waits until each is ready.
start_hop_nodes() {
  local node_bin=$1 log_dir=$2 i
  shift 2
  for i in 0 1 2; do
    env "$@" GUBER_GRPC_ADDRESS=127.0.0.1:191${i}1 GUBER_HTTP_ADDRESS=127.0.0.1:191${i}0 \
      GUBER_PEER_DISCOVERY_TYPE=static GUBER_PEERS=$PEERS GUBER_LOG_LEVEL=warn "$node_bin" \
      >"$log_dir/$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2; do
    for _ in $(seq 50); do curl -fsS "http://127.0.0.1:191${i}0/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
}

# pick_hop_names: sets DIRECT_NAME (a limit name whose key k0 node B owns) and FORWARD_NAME (one
# another node owns), chosen with `ringlimit ring`.
pick_hop_names() {
  local i owner
  DIRECT_NAME=""; FORWARD_NAME=""
  for i in $(seq 0 99); do
    owner=$("$LOAD" ring --peers "$PEERS" --name "lowload$i" k0 | cut -f2)
    if [ "$owner" = "$B" ]; then
      [ -n "$DIRECT_NAME" ] || DIRECT_NAME=lowload$i
    else
      [ -n "$FORWARD_NAME" ] || FORWARD_NAME=lowload$i
    fi
    [ -z "$DIRECT_NAME" ] || [ -z "$FORWARD_NAME" ] || return 0
  done
}
