#!/usr/bin/env bash
# End to end against Hugging Face transformers: `serve --model tests/data/<fixture> --tp 2` on CPU
# workers returns, over gRPC, exactly the greedy tokens transformers recorded for each fixture.
# Label: integration.
source "$(dirname "$0")/lib.sh"
require_node_clients
TOKENIZER=$(dirname "$(find "$DELTASERVE_SOURCE_DIR/data/tokenizer" -name tokenizer.json | head -n 1)")
[[ -f $TOKENIZER/tokenizer.json ]] || fail "no tokenizer data under data/tokenizer: run deploy/setup.sh"
for fixture in qwen3_5_dense qwen3_5_moe qwen3_next; do
  # --cuda-graph-max-bs reaches the workers (proto Init); CPU ranks with host collectives run eagerly.
  start_server --model "$DELTASERVE_SOURCE_DIR/tests/data/$fixture" --tokenizer "$TOKENIZER" --tp 2 --device cpu \
    --cuda-graph-max-bs 8
  export BASE_URL GRPC_PORT FIXTURE=$fixture
  run_node fixture_greedy.mjs || fail "$fixture: greedy tokens"
  stop_server
done
log "PASS"
