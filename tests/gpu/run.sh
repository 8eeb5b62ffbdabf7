#!/usr/bin/env bash
# Run the GPU tests (and optionally the benchmarks) from a relocatable bundle on a GPU host.
#   tests/run.sh [--bench] [--sanitize] [gtest filter]
# Logs go to $OUT (the device tool's result folder) when set, else to ./gpu-logs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOGS=${OUT:-$PWD/gpu-logs}
mkdir -p "$LOGS"
export NCCL_NVLS_ENABLE=0
BENCH=0 SANITIZE=0 FILTER='*'
for arg in "$@"; do
  case $arg in
    --bench) BENCH=1 ;;
    --sanitize) SANITIZE=1 ;;
    *) FILTER=$arg ;;
  esac
done

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"
failed=0
for t in "$HERE"/*_test; do
  name=$(basename "$t")
  filter=$FILTER
  # The control-plane test's GPU case spawns worker processes (TP over NCCL on every visible GPU);
  # its other cases are CPU tests, and memcheck does not follow the spawned workers.
  if [[ $name == worker_process_control_plane_test ]]; then
    ((SANITIZE)) && continue
    [[ $FILTER == '*' ]] && filter='*Gpu*'
  fi
  if ((SANITIZE)); then
    # API errors are left to our own checks (every runtime call is checked): NCCL's start-up probes
    # of kernels for other architectures would otherwise count as memcheck errors.
    /usr/local/cuda/bin/compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 "$t" \
      --gtest_filter="$filter" \
      >"$LOGS/$name.memcheck.log" 2>&1
  else
    "$t" --gtest_filter="$filter" >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  status=PASS; ((rc == 77)) && status=SKIP; ((rc != 0 && rc != 77)) && { status="FAIL(rc=$rc)"; failed=1; }
  echo "$status $name" | tee -a "$LOGS/summary.txt"
done
if ((BENCH)); then
  for b in "$HERE"/*_bench; do
    [[ -x $b ]] || continue
    name=$(basename "$b")
    "$b" >"$LOGS/$name.log" 2>&1
    echo "bench $name rc=$?" | tee -a "$LOGS/summary.txt"
  done
fi
exit $failed
