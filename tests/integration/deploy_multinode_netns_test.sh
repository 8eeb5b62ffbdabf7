#!/usr/bin/env bash
# Multi-node tensor parallelism across simulated hosts: network namespaces joined by veth pairs
# to a bridge (the bridge lives in its own "switch" namespace, so the host's network is never
# touched). Host A runs node 0 (`serve --node-rank 0`: the front end and rank 0), host B runs
# node 1 (`serve --node-rank 1`: rank 1), host C is a client with only the network. TP 2 across
# A and B must give exactly the greedy tokens of a TP 1 single-process server.
#
# The front end always hosts tp/nnodes ranks itself (there is no "front end only" node), so a
# layout with the front end alone on one host and both ranks on two others is not expressible
# with the current CLI; rank 0 shares host A with the front end.
#
# Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) for `ip netns`; exits 77 without it.
source "$(dirname "$0")/lib.sh"

PROMPTS=("The capital of France is" "def fibonacci(n):" "Once upon a time, in a quiet village,")
MAX_TOKENS=8
SUBNET=10.213.7
NS_PREFIX=ds$$
SWITCH=${NS_PREFIX}sw
declare -A HOST_IP=([a]=$SUBNET.1 [b]=$SUBNET.2 [c]=$SUBNET.3)
NODE_PIDS=()

netns_cleanup() {
  local pid ns
  for pid in "${NODE_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for ns in a b c sw; do ip netns del "${NS_PREFIX}$ns" 2>/dev/null; done
}
# errexit off in the trap (a failed kill must not skip the rest); lib.sh's cleanup reads $? as the
# script's exit status, so it is restored just before.
trap 'rc=$?; set +e; netns_cleanup; (exit $rc); cleanup' EXIT

command -v ip >/dev/null || { log "SKIP: iproute2 (ip) is not installed"; exit 77; }
if ! ip netns add "$SWITCH" 2>"$WORK_DIR/netns.err"; then
  log "SKIP: cannot create network namespaces ($(cat "$WORK_DIR/netns.err")); this test needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN"
  exit 77
fi
in_ns() { local ns=$1; shift; ip netns exec "${NS_PREFIX}$ns" "$@"; }

# One simulated host: namespace NS_PREFIX<h>, its eth0 cabled to the switch's bridge.
add_host() {
  local h=$1
  ip netns add "${NS_PREFIX}$h"
  ip link add eth0 netns "${NS_PREFIX}$h" type veth peer name "port$h" netns "$SWITCH"
  in_ns sw ip link set "port$h" master br0 up
  in_ns "$h" ip addr add "${HOST_IP[$h]}/24" dev eth0
  in_ns "$h" ip link set eth0 up
  in_ns "$h" ip link set lo up
}
in_ns sw ip link add br0 type bridge
in_ns sw ip link set br0 up
for h in a b c; do add_host "$h"; done
log "hosts: a=${HOST_IP[a]} (front end, rank 0)  b=${HOST_IP[b]} (rank 1)  c=${HOST_IP[c]} (client)"

# complete URL PROMPT [runner...]: the greedy text of one completion, fetched through `runner`.
complete() {
  local url=$1 prompt=$2; shift 2
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "max_tokens": int(sys.argv[2]), "temperature": 0, "ignore_eos": True}))' \
    "$prompt" "$MAX_TOKENS")
  "$@" curl -sf --max-time 120 "$url/v1/completions" -H 'content-type: application/json' -d "$body" |
    python3 -c 'import json,sys; c=json.load(sys.stdin)["choices"][0]; print(json.dumps(c["text"]))'
}

# Reference: TP 1 in one process, on the host's own network.
start_server --tp 1 --device cpu
declare -a reference
for i in "${!PROMPTS[@]}"; do
  reference[i]=$(complete "$BASE_URL" "${PROMPTS[i]}") || fail "TP 1 completion of prompt $i failed"
done
stop_server

# Two nodes on two hosts; node 1 dials node 0's control plane over the bridge. (`ip netns exec`
# execs the command, so $! is deltaserve itself.)
control=${HOST_IP[a]}:29500
node_args=(--tp 2 --nnodes 2 --dist-init-addr "$control" --device cpu)
ip netns exec "${NS_PREFIX}b" "$DELTASERVE_BIN" serve "${node_args[@]}" --node-rank 1 >"$WORK_DIR/node1.log" 2>&1 &
NODE_PIDS+=($!)
ip netns exec "${NS_PREFIX}a" "$DELTASERVE_BIN" serve "${node_args[@]}" --node-rank 0 --host 0.0.0.0 --port 8000 \
  --grpc-port 50051 >"$WORK_DIR/server.log" 2>&1 &
SERVER_PID=$!
NODE_PIDS+=("$SERVER_PID")
FRONT_URL=http://${HOST_IP[a]}:8000
deadline=$((SECONDS + ${STARTUP_TIMEOUT:-300}))
until in_ns c curl -sf "$FRONT_URL/health" >/dev/null 2>&1; do
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK_DIR/node1.log" >&2; fail "node 0 exited during start-up"; }
  kill -0 "${NODE_PIDS[0]}" 2>/dev/null || { tail -n 30 "$WORK_DIR/node1.log" >&2; fail "node 1 exited during start-up"; }
  ((SECONDS < deadline)) || { tail -n 30 "$WORK_DIR/node1.log" >&2; fail "2-node server not healthy within ${STARTUP_TIMEOUT:-300} s"; }
  sleep 0.5
done
grep -q "worker rank 1 attached from" "$WORK_DIR/server.log" || fail "the log does not show rank 1 attaching"
mapfile -t WORKER_PIDS < <(pgrep -P "$SERVER_PID" || true)
mapfile -t NODE1_WORKERS < <(pgrep -P "${NODE_PIDS[0]}" || true)
((${#WORKER_PIDS[@]} == 1 && ${#NODE1_WORKERS[@]} == 1)) ||
  fail "expected one worker per host, found ${#WORKER_PIDS[@]} on a and ${#NODE1_WORKERS[@]} on b"
# Rank 1's process really lives in host b's namespace.
[[ $(readlink "/proc/${NODE1_WORKERS[0]}/ns/net") == "$(in_ns b readlink /proc/self/ns/net)" ]] ||
  fail "rank 1 (pid ${NODE1_WORKERS[0]}) is not in host b's network namespace"
log "2-node server healthy, seen from host c"

for i in "${!PROMPTS[@]}"; do
  got=$(complete "$FRONT_URL" "${PROMPTS[i]}" in_ns c) || fail "TP 2 completion of prompt $i failed (from host c)"
  [[ $got == "${reference[i]}" ]] || fail "prompt $i: TP 2 over two hosts gave $got, TP 1 gave ${reference[i]}"
  log "prompt $i: $got (same as TP 1)"
done

# Stopping node 0 stops everything: its worker, and node 1 with its worker.
stop_server
deadline=$((SECONDS + 30))
while kill -0 "${NODE_PIDS[0]}" 2>/dev/null || kill -0 "${NODE1_WORKERS[0]}" 2>/dev/null; do
  ((SECONDS < deadline)) || { tail -n 20 "$WORK_DIR/node1.log" >&2; fail "node 1 still running 30 s after node 0 stopped"; }
  sleep 0.2
done
log "ok: node 1 and its worker exited after node 0 stopped"
log "PASS"
