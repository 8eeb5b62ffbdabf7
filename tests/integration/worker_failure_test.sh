#!/usr/bin/env bash
# Killing a worker mid-generation: the client gets a clear error, the server stays up and reports
# unhealthy (503 on /health, new requests refused with 503), and no process is left behind.
source "$(dirname "$0")/lib.sh"
start_server --tp 2 --device cpu
((${#WORKER_PIDS[@]} == 2)) || fail "expected 2 worker processes, found ${#WORKER_PIDS[@]}"

start_long_stream "$BASE_URL" "$WORK_DIR/stream.out"
victim=${WORKER_PIDS[1]}
log "killing worker $victim (SIGKILL) mid-stream"
kill -KILL "$victim"
wait "$STREAM_PID" || true

grep -q '"error"' "$WORK_DIR/stream.out" || fail "the stream ended without an error event: $(tail -c 400 "$WORK_DIR/stream.out")"
grep -q 'worker rank' "$WORK_DIR/stream.out" || fail "the error does not name the worker: $(grep error "$WORK_DIR/stream.out" | head -c 400)"
tail -n 2 "$WORK_DIR/stream.out" | grep -q 'data: \[DONE\]' || fail "the stream did not end with [DONE]"
log "ok: client got: $(grep -o '"message":"[^"]*"' "$WORK_DIR/stream.out" | head -1)"

kill -0 "$SERVER_PID" || fail "the server died with its worker"
code=$(curl -s -o "$WORK_DIR/health.out" -w '%{http_code}' "$BASE_URL/health")
[[ $code == 503 ]] || fail "/health is $code after a worker died, expected 503"
grep -q 'worker rank' "$WORK_DIR/health.out" || fail "/health does not say why: $(cat "$WORK_DIR/health.out")"
# The root cause (the killed process) reaches /health even when a peer's error came first.
deadline=$((SECONDS + 10))
until curl -s "$BASE_URL/health" | grep -q "pid $victim) killed by signal 9"; do
  ((SECONDS < deadline)) || fail "/health never named the killed worker: $(curl -s "$BASE_URL/health")"
  sleep 0.2
done
log "ok: /health: $(curl -s "$BASE_URL/health")"
code=$(curl -s -o "$WORK_DIR/late.out" -w '%{http_code}' "$BASE_URL/v1/completions" -H 'content-type: application/json' -d '{"prompt":"x"}')
[[ $code == 503 ]] || fail "a new request got $code on an unhealthy server, expected 503"
curl -sf "$BASE_URL/metrics" | grep -q '^deltaserve_healthy 0' || fail "/metrics does not report unhealthy"
log "ok: server up, unhealthy, refusing new work"

# The surviving worker is stopped by the front end, before the front end itself exits.
deadline=$((SECONDS + 15))
while kill -0 "${WORKER_PIDS[0]}" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the surviving worker ${WORKER_PIDS[0]} is still running 15 s after the failure"
  sleep 0.2
done
[[ -z $(ps -o pid= --ppid "$SERVER_PID" -o stat= | awk '$2 ~ /Z/') ]] || fail "zombie children of the server"
stop_server
log "PASS"
