#!/usr/bin/env bash
# Graceful shutdown under load: 32 streaming completions are running when the server gets SIGTERM.
# Short ones must complete during the drain, long ones must end with an error naming the shutdown
# once --shutdown-timeout passes, no new request is admitted, and the server and its workers exit
# within the timeout plus a margin, leaving no process behind (deploy_sigterm.mjs has the checks
# on the clients' side).
source "$(dirname "$0")/lib.sh"

SHUTDOWN_TIMEOUT=20  # generous: a step can take seconds on a busy CI machine
EXIT_MARGIN=10  # stopping the engine, the APIs and the workers after the drain

require_node_clients
start_server --tp 2 --device cpu --shutdown-timeout "$SHUTDOWN_TIMEOUT"
((${#WORKER_PIDS[@]} == 2)) || fail "expected 2 worker processes, found ${#WORKER_PIDS[@]}"

BASE_URL=$BASE_URL GRPC_PORT=$GRPC_PORT run_node deploy_sigterm.mjs "$SERVER_PID" 32 >"$WORK_DIR/clients.out" 2>&1 &
CLIENTS_PID=$!
until grep -q '^sigterm_at_ms' "$WORK_DIR/clients.out" 2>/dev/null; do
  kill -0 "$CLIENTS_PID" 2>/dev/null || { cat "$WORK_DIR/clients.out" >&2; fail "the clients ended before sending SIGTERM"; }
  sleep 0.05
done
signalled_at=$(awk '/^sigterm_at_ms/ { print $2 }' "$WORK_DIR/clients.out")
log "SIGTERM sent under load; waiting for the server to exit"

limit_s=$((SHUTDOWN_TIMEOUT + EXIT_MARGIN))
while kill -0 "$SERVER_PID" 2>/dev/null; do
  (($(date +%s%3N) - signalled_at < limit_s * 1000)) || fail "the server is still running ${limit_s} s after SIGTERM"
  sleep 0.05
done
exit_ms=$(($(date +%s%3N) - signalled_at))
wait "$SERVER_PID" && server_rc=0 || server_rc=$?
SERVER_PID=
((server_rc == 0)) || fail "the server exited with status $server_rc after SIGTERM"
log "server exited ${exit_ms} ms after SIGTERM (--shutdown-timeout $SHUTDOWN_TIMEOUT)"
((exit_ms >= SHUTDOWN_TIMEOUT * 1000 - 500)) || fail "the server exited after ${exit_ms} ms, before the long requests' drain time was up"

for pid in "${WORKER_PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null && fail "worker $pid outlived the server"
done
# Any process still dialling this server's control plane would be an orphan.
control=$(sed -n 's/.*worker control plane listening on \(\S*\).*/\1/p' "$WORK_DIR/server.log" | head -n 1)
[[ -n $control ]] || fail "the server log does not name its worker control plane"
leftover=$(pgrep -af -- "worker --connect [^ ]*:${control##*:} " || true)
[[ -z $leftover ]] || fail "processes left behind: $leftover"

wait "$CLIENTS_PID" || { cat "$WORK_DIR/clients.out" >&2; fail "client-side checks failed"; }
log "clients: $(tail -n 1 "$WORK_DIR/clients.out")"
grep -q 'draining' "$WORK_DIR/server.log" || fail "the server log does not mention the drain"
log "PASS"
