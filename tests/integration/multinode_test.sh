#!/usr/bin/env bash
# Multi-node layout on one host: node 1 (`serve --node-rank 1`) only starts its worker, which
# attaches to node 0's front end; together they serve with TP 2 and give the same greedy text as
# a single-node TP 2 server. When node 0 stops, node 1's worker and launcher exit too.
source "$(dirname "$0")/lib.sh"

body='{"prompt":"Multi-node greedy check:","max_tokens":12,"temperature":0,"ignore_eos":true}'
start_server --tp 2 --device cpu
single=$(curl -sf "$BASE_URL/v1/completions" -H 'content-type: application/json' -d "$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])')
stop_server

control_port=$(free_port)
"$DELTASERVE_BIN" serve --tp 2 --nnodes 2 --node-rank 1 --dist-init-addr "127.0.0.1:$control_port" --device cpu \
  >"$WORK_DIR/node1.log" 2>&1 &
NODE1_PID=$!
trap 'rc=$?; set +e; kill -KILL $NODE1_PID 2>/dev/null; (exit $rc); cleanup' EXIT
start_server --tp 2 --nnodes 2 --node-rank 0 --dist-init-addr "127.0.0.1:$control_port" --device cpu
((${#WORKER_PIDS[@]} == 1)) || fail "node 0 should run 1 worker, it runs ${#WORKER_PIDS[@]}"
node1_workers=$(pgrep -P "$NODE1_PID" | wc -l)
((node1_workers == 1)) || fail "node 1 should run 1 worker, it runs $node1_workers"
multi=$(curl -sf "$BASE_URL/v1/completions" -H 'content-type: application/json' -d "$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])')
[[ "$multi" == "$single" ]] || fail "2-node text differs: '$multi' vs single-node '$single'"
log "ok: 2-node TP 2 greedy text equals single-node TP 2"
stop_server

deadline=$((SECONDS + 30))
while kill -0 "$NODE1_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || { cat "$WORK_DIR/node1.log" >&2; fail "node 1 still running 30 s after node 0 stopped"; }
  sleep 0.2
done
log "ok: node 1 exited after node 0 stopped"
log "PASS"
