#!/usr/bin/env bash
# The real server (2 CPU workers, the tiny default) against the official openai npm client and a
# grpc-js client; malformed requests; body limit; client disconnects. Label: integration.
source "$(dirname "$0")/lib.sh"
require_node_clients
start_server --tp 2 --device cpu
export BASE_URL GRPC_PORT

run_node api_clients.mjs || fail "api clients"
run_node malformed.mjs || fail "malformed requests"

# A body over --max-body-bytes (8 MiB by default) gets 413 and an OpenAI error.
head -c $((9 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$WORK_DIR/big.json"
code=$(curl -s -o "$WORK_DIR/big.out" -w '%{http_code}' -H 'content-type: application/json' \
  --data-binary @"$WORK_DIR/big.json" "$BASE_URL/v1/completions" || true)
[[ $code == 413 ]] || fail "9 MiB body: HTTP $code, expected 413"
grep -q '"request_too_large"' "$WORK_DIR/big.out" || fail "413 without its error body: $(head -c 300 "$WORK_DIR/big.out")"
curl -sf "$BASE_URL/health" >/dev/null || fail "unhealthy after the oversized body"
log "ok: 9 MiB body -> 413"

run_node disconnect.mjs || fail "client disconnect"
stop_server
log "PASS"
