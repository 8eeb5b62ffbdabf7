#!/usr/bin/env bash
# Set up (deploy/setup.sh), then run the whole test suite: unit, integration and gpu labels.
# GPU tests report themselves skipped without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" -L 'unit|integration|gpu' "$@"
