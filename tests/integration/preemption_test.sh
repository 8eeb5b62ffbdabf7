#!/usr/bin/env bash
# Preemption by recompute on the real workers: 6 KV pages of 16 tokens for 4 requests of ~50
# tokens each (2 CPU workers, the tiny default). Label: integration.
source "$(dirname "$0")/lib.sh"
require_node_clients
start_server --tp 2 --device cpu --max-kv-pages 6 --kv-page-size 16 --max-running-requests 4
export BASE_URL GRPC_PORT
run_node preemption.mjs || fail "preemption"
stop_server
log "PASS"
