# Shared helpers of the integration tests: start `deltaserve serve` on free ports, wait until it
# is healthy, and stop it checking that no worker process is left behind.
# Needs DELTASERVE_BIN and DELTASERVE_SOURCE_DIR (ctest sets both).
set -euo pipefail

: "${DELTASERVE_BIN:?set DELTASERVE_BIN to the deltaserve executable}"
: "${DELTASERVE_SOURCE_DIR:?set DELTASERVE_SOURCE_DIR to the source tree}"
INTEGRATION_DIR=$DELTASERVE_SOURCE_DIR/tests/integration
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/deltaserve-it.XXXXXX")
SERVER_PID=
WORKER_PIDS=()

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAIL: $*"
  [[ -f $WORK_DIR/server.log ]] && { echo "---- server log (tail) ----" >&2; tail -n 60 "$WORK_DIR/server.log" >&2; }
  exit 1
}

require_node_clients() {
  if [[ ! -d $INTEGRATION_DIR/node_modules/openai || ! -d $INTEGRATION_DIR/node_modules/@grpc/grpc-js ]]; then
    log "SKIP: node clients missing; run: (cd tests/integration && npm install --no-audit --no-fund)"
    exit 77
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start_server [serve args...]: sets SERVER_PID, HTTP_PORT, GRPC_PORT, BASE_URL; waits for /health.
start_server() {
  HTTP_PORT=$(free_port)
  GRPC_PORT=$(free_port)
  BASE_URL=http://127.0.0.1:$HTTP_PORT
  log "starting: deltaserve serve --port $HTTP_PORT --grpc-port $GRPC_PORT $*"
  "$DELTASERVE_BIN" serve --port "$HTTP_PORT" --grpc-port "$GRPC_PORT" "$@" >"$WORK_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + ${STARTUP_TIMEOUT:-300}))
  until curl -sf "$BASE_URL/health" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during start-up"
    ((SECONDS < deadline)) || fail "the server was not healthy within ${STARTUP_TIMEOUT:-300} s"
    sleep 0.5
  done
  mapfile -t WORKER_PIDS < <(pgrep -P "$SERVER_PID" || true)
  log "healthy; workers: ${WORKER_PIDS[*]:-none}"
}

# stop_server: SIGTERM, wait, and check that the server and every worker are gone.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -KILL "$SERVER_PID" 2>/dev/null; fail "the server ignored SIGTERM for 60 s"; }
    sleep 0.2
  done
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  for pid in "${WORKER_PIDS[@]}"; do
    local until_gone=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < until_gone)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      fail "worker $pid outlived the server"
    fi
  done
  log "server and workers stopped"
}

cleanup() {
  local rc=$?
  if [[ -n $SERVER_PID ]]; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    for pid in "${WORKER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  rm -rf "$WORK_DIR"
  exit $rc
}
trap cleanup EXIT

# metric NAME: the value of an unlabelled metric (or NAME{labels}) from /metrics.
metric() {
  curl -sf "${CURL_AUTH[@]}" "$BASE_URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
CURL_AUTH=()

# start_long_stream URL FILE [runner...]: a 4000-token greedy stream into FILE in the background
# (its pid in STREAM_PID), returning once the first token has arrived (fails after 60 s). `runner`
# prefixes curl, e.g. a network-namespace wrapper.
start_long_stream() {
  local url=$1 out=$2
  shift 2
  "$@" curl -sN "$url/v1/completions" -H 'content-type: application/json' \
    -d '{"prompt":"A long story:","max_tokens":4000,"temperature":0,"ignore_eos":true,"stream":true}' >"$out" &
  STREAM_PID=$!
  local deadline=$((SECONDS + 60))
  until grep -q '"text"' "$out" 2>/dev/null; do
    kill -0 "$STREAM_PID" 2>/dev/null || fail "the stream ended before its first token: $(head -c 300 "$out")"
    ((SECONDS < deadline)) || { kill "$STREAM_PID" 2>/dev/null; fail "no streamed token within 60 s"; }
    sleep 0.1
  done
}
# expect_drained_stream FILE WHAT: after a shutdown signal (WHAT) under start_long_stream's
# request, tokens kept coming (counted from 1 s after the signal, so that tokens already on their
# way cannot pass for a drain) and the stream then ended with [DONE], naming the shutdown.
expect_drained_stream() {
  local out=$1 what=$2 at_signal chunks reason
  sleep 1
  at_signal=$(grep -c '"text"' "$out")
  wait "$STREAM_PID" || true
  chunks=$(grep -c '"text"' "$out")
  tail -n 2 "$out" | grep -q '^data: \[DONE\]' || fail "the stream did not end with [DONE]: $(tail -c 400 "$out")"
  reason=$(grep -o '"message":"[^"]*"' "$out" | head -n 1)
  [[ $reason == *"shutting down"* ]] || fail "the stream ended without naming the shutdown: ${reason:-$(tail -c 400 "$out")}"
  ((chunks > at_signal)) || fail "no token streamed after $what ($at_signal chunks 1 s after it, $chunks at the end)"
  log "ok: $((chunks - at_signal)) chunks streamed in the drain after $what, then $reason"
}

run_node() { (cd "$INTEGRATION_DIR" && node "$@"); }
