#!/usr/bin/env bash
# --api-key on HTTP and gRPC (1 CPU worker, the tiny default). Label: integration.
source "$(dirname "$0")/lib.sh"
require_node_clients
start_server --tp 1 --device cpu --api-key "s3cret-key"
export BASE_URL GRPC_PORT API_KEY=s3cret-key
run_node auth.mjs || fail "auth"
stop_server
log "PASS"
