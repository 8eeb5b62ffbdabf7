#!/usr/bin/env bash
# Multi-node tensor parallelism across simulated hosts: network namespaces joined by veth pairs
# to a bridge (the bridge lives in its own "switch" namespace, so the host's network is never
# touched). Host A runs only the front end (`serve --node-rank 0 --dedicated-frontend`), hosts B
# and C one CPU rank each (`serve --node-rank 1|2 --dedicated-frontend`), host D is a client with
# only the network. TP 2 across B and C must give exactly the greedy tokens of a TP 1
# single-process server, and SIGTERM to every process of the three nodes at once (what scancel
# does) must drain an in-flight stream and leave nothing running.
#
# Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) for `ip netns`; exits 77 without it.
source "$(dirname "$0")/lib.sh"

PROMPTS=("The capital of France is" "def fibonacci(n):" "Once upon a time, in a quiet village,")
MAX_TOKENS=8
SUBNET=10.213.7
NS_PREFIX=ds$$
SWITCH=${NS_PREFIX}sw
declare -A HOST_IP=([a]=$SUBNET.1 [b]=$SUBNET.2 [c]=$SUBNET.3 [d]=$SUBNET.4)
NODE_PIDS=()

netns_cleanup() {
  local pid ns
  for pid in "${NODE_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for ns in a b c d sw; do ip netns del "${NS_PREFIX}$ns" 2>/dev/null; done
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
for h in a b c d; do add_host "$h"; done
log "hosts: a=${HOST_IP[a]} (front end only)  b=${HOST_IP[b]} (rank 0)  c=${HOST_IP[c]} (rank 1)  d=${HOST_IP[d]} (client)"

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

# Three nodes on three hosts; nodes 1 and 2 dial node 0's control plane over the bridge.
# (`ip netns exec` execs the command, so $! is deltaserve itself.)
control=${HOST_IP[a]}:29500
SHUTDOWN_TIMEOUT=5
node_args=(--tp 2 --nnodes 3 --dedicated-frontend --dist-init-addr "$control" --device cpu --shutdown-timeout "$SHUTDOWN_TIMEOUT")
RANK_HOSTS=(b c)  # node i+1 runs on RANK_HOSTS[i] and hosts rank i
for i in 0 1; do
  h=${RANK_HOSTS[i]}
  ip netns exec "${NS_PREFIX}$h" "$DELTASERVE_BIN" serve "${node_args[@]}" --node-rank $((i + 1)) >"$WORK_DIR/node_$h.log" 2>&1 &
  NODE_PIDS+=($!)
done
ip netns exec "${NS_PREFIX}a" "$DELTASERVE_BIN" serve "${node_args[@]}" --node-rank 0 --host 0.0.0.0 --port 8000 \
  --grpc-port 50051 >"$WORK_DIR/server.log" 2>&1 &
SERVER_PID=$!
NODE_PIDS+=("$SERVER_PID")
FRONT_URL=http://${HOST_IP[a]}:8000
show_node_logs() { local h; for h in b c; do echo "---- node on host $h (tail) ----" >&2; tail -n 20 "$WORK_DIR/node_$h.log" >&2; done; }
deadline=$((SECONDS + ${STARTUP_TIMEOUT:-300}))
until in_ns d curl -sf "$FRONT_URL/health" >/dev/null 2>&1; do
  kill -0 "$SERVER_PID" 2>/dev/null || { show_node_logs; fail "the front end (host a) exited during start-up"; }
  kill -0 "${NODE_PIDS[0]}" 2>/dev/null || { show_node_logs; fail "node 1 (host b) exited during start-up"; }
  kill -0 "${NODE_PIDS[1]}" 2>/dev/null || { show_node_logs; fail "node 2 (host c) exited during start-up"; }
  ((SECONDS < deadline)) || { show_node_logs; fail "3-node server not healthy within ${STARTUP_TIMEOUT:-300} s"; }
  sleep 0.5
done
for r in 0 1; do grep -q "worker rank $r attached from" "$WORK_DIR/server.log" || fail "the log does not show rank $r attaching"; done
mapfile -t FRONT_END_CHILDREN < <(pgrep -P "$SERVER_PID" || true)
((${#FRONT_END_CHILDREN[@]} == 0)) || fail "the dedicated front end runs ${#FRONT_END_CHILDREN[@]} local worker(s)"
# Each rank's process really lives in its host's namespace: rank 0 on b, rank 1 on c.
declare -A WORKER_OF_HOST
for i in 0 1; do
  h=${RANK_HOSTS[i]}
  mapfile -t workers < <(pgrep -P "${NODE_PIDS[i]}" || true)
  ((${#workers[@]} == 1)) || fail "expected one worker on host $h, found ${#workers[@]}"
  WORKER_OF_HOST[$h]=${workers[0]}
  cmdline=$(tr '\0' ' ' <"/proc/${workers[0]}/cmdline")
  [[ $cmdline == *" --rank $i "* ]] || fail "the worker on host $h is not rank $i: $cmdline"
  [[ $(readlink "/proc/${workers[0]}/ns/net") == "$(in_ns "$h" readlink /proc/self/ns/net)" ]] ||
    fail "rank $i (pid ${workers[0]}) is not in host $h's network namespace"
done
log "3-node server healthy (front end alone on a, ranks on b and c), seen from host d"

for i in "${!PROMPTS[@]}"; do
  got=$(complete "$FRONT_URL" "${PROMPTS[i]}" in_ns d) || fail "TP 2 completion of prompt $i failed (from host d)"
  [[ $got == "${reference[i]}" ]] || fail "prompt $i: TP 2 over hosts b and c gave $got, TP 1 gave ${reference[i]}"
  log "prompt $i: $got (same as TP 1)"
done

# SIGTERM to every process of every host at once, as Slurm's scancel or deleting a LWS group does,
# under a stream that cannot finish within --shutdown-timeout: the ranks keep serving the front
# end's drain (the stream gets tokens after the signal), the stream ends naming the shutdown, and
# the worker nodes wait for the front end to stop their workers, then every process is gone.
STREAM=$WORK_DIR/stream.out
start_long_stream "$FRONT_URL" "$STREAM" in_ns d
ALL_PIDS=("${NODE_PIDS[@]}" "${WORKER_OF_HOST[b]}" "${WORKER_OF_HOST[c]}")
kill -TERM "${ALL_PIDS[@]}"
log "SIGTERM to the front end, both worker nodes and both workers under a stream"
expect_drained_stream "$STREAM" SIGTERM
deadline=$((SECONDS + SHUTDOWN_TIMEOUT + 30))
for pid in "${ALL_PIDS[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { show_node_logs; fail "process $pid still running $((SHUTDOWN_TIMEOUT + 30)) s after SIGTERM"; }
    sleep 0.2
  done
done
SERVER_PID=
grep -q "waiting up to .* for node 0" "$WORK_DIR/node_b.log" || { show_node_logs; fail "node 1 did not wait for node 0's drain"; }
log "ok: every process of the three nodes exited"
log "PASS"
