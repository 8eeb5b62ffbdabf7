#!/usr/bin/env bash
# The serving workloads of docs/performance.md, run against a server this script starts, once per
# GDN projection form (fused, then split), so the two are measured on the same card in one session.
#
#   bench/serving_suite.sh OUT_DIR [serve options...]
#   e.g. bench/serving_suite.sh /tmp/9b --preset qwen3.5-9b --load-format dummy --tp 1
#
# Workloads (all gRPC, token ids, --ignore-eos, fixed lengths):
#   a  concurrency 1,   256 in /  256 out,  8 prompts
#   b  request rate 10, 256 in / 1024 out, 200 prompts  (SGLang PR #21019's workload, shortened)
#   c  concurrency 64, 1024 in /  512 out, 128 prompts
# Writes OUT_DIR/<projection>-<workload>.json (bench result files) and .txt (summaries), and the
# server logs. DELTASERVE (default: the deltaserve next to this script's bin/, else on PATH),
# PORT and GRPC_PORT may be set; WORKLOADS="a b c" and PROJECTIONS="fused split" select a subset.
set -euo pipefail
OUT=${1:?usage: serving_suite.sh OUT_DIR [serve options...]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
DELTASERVE=${DELTASERVE:-$(command -v "$HERE/../bin/deltaserve" || command -v deltaserve || true)}
[[ -x $DELTASERVE ]] || { echo "serving_suite: no deltaserve binary (set DELTASERVE)" >&2; exit 1; }
PORT=${PORT:-18000}
GRPC_PORT=${GRPC_PORT:-18001}
WORKLOADS=${WORKLOADS:-a b c}
PROJECTIONS=${PROJECTIONS:-fused split}
mkdir -p "$OUT"

declare -A WORKLOAD=(
  [a]="--num-prompts 8 --random-input-len 256 --random-output-len 256 --max-concurrency 1"
  [b]="--num-prompts 200 --random-input-len 256 --random-output-len 1024 --request-rate 10"
  [c]="--num-prompts 128 --random-input-len 1024 --random-output-len 512 --max-concurrency 64"
)

server_pid=
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
trap stop_server EXIT

# /health answers 200 once the workers are up; give a real-size model time to load.
wait_healthy() {
  for _ in $(seq 1 600); do
    kill -0 "$server_pid" 2>/dev/null || { echo "serving_suite: server exited during start-up" >&2; return 1; }
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "serving_suite: server not healthy after 600 s" >&2
  return 1
}

for projection in $PROJECTIONS; do
  started=$(date +%s)
  "$DELTASERVE" serve "$@" --gdn-projection "$projection" --port "$PORT" --grpc-port "$GRPC_PORT" \
    >"$OUT/serve-$projection.log" 2>&1 &
  server_pid=$!
  wait_healthy
  echo "== $projection: server healthy after $(($(date +%s) - started)) s"
  for w in $WORKLOADS; do
    # shellcheck disable=SC2086 # the workload's options are words
    "$DELTASERVE" bench --backend grpc --port "$GRPC_PORT" ${WORKLOAD[$w]} --random-range-ratio 1 --ignore-eos \
      --seed 1 --warmup-requests 2 --output-file "$OUT/$projection-$w.json" >"$OUT/$projection-$w.txt" 2>&1 ||
      { cat "$OUT/$projection-$w.txt"; echo "serving_suite: bench failed ($projection, workload $w)" >&2; exit 1; }
    echo "== $projection workload $w: ${WORKLOAD[$w]}"
    cat "$OUT/$projection-$w.txt"
  done
  stop_server
done
