#!/usr/bin/env bash
# 1000 concurrent streaming clients complete, and 256 concurrent greedy requests each equal their
# solo output (2 CPU workers, the tiny default). Label: integration.
source "$(dirname "$0")/lib.sh"
require_node_clients
start_server --tp 2 --device cpu
export BASE_URL GRPC_PORT
STREAMS=${STREAMS:-1000} GREEDY=${GREEDY:-256} run_node concurrency.mjs || fail "concurrency"
stop_server
log "PASS"
