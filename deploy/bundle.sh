#!/usr/bin/env bash
# Relocatable bundle for GPU hosts that lack our Debian libraries (gRPC, protobuf, Abseil, ...):
#   dist/deltaserve/bin/    deltaserve
#   dist/deltaserve/tests/  GPU tests and benchmarks, tests/gpu/run.sh
#   dist/deltaserve/bench/  serving_suite.sh (the serving workloads of docs/performance.md)
#   dist/deltaserve/lib/    every non-system shared library they load (rpath $ORIGIN/../lib)
#   dist/deltaserve.tar.xz  the same, packed for copying to GPU hosts
# Left out: glibc and the CUDA/NCCL libraries, which GPU hosts have (/usr/local/cuda/lib64 is on
# the rpath after lib/). Usage: deploy/bundle.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-dist/deltaserve}

[[ -x $BUILD/bin/deltaserve ]] || { echo "bundle: build first ($BUILD/bin/deltaserve missing)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/tests" "$OUT/bench"

cp "$BUILD/bin/deltaserve" "$OUT/bin/"
for exe in "$BUILD"/tests/*; do
  [[ -x $exe && -f $exe ]] || continue
  case $(basename "$exe") in *_test|*_bench) ;; *) continue ;; esac
  # GPU tests and benches only (and the control-plane test, whose GPU variant runs TP over NCCL):
  # they are what a GPU host needs.
  name=$(basename "$exe")
  [[ -f tests/gpu/$name.cu || -f tests/gpu/$name.cpp || $name == worker_process_control_plane_test ]] || continue
  cp "$exe" "$OUT/tests/"
done
cp tests/gpu/run.sh "$OUT/tests/"
cp bench/serving_suite.sh "$OUT/bench/"
[[ -d data/tokenizer ]] && mkdir -p "$OUT/data" && cp -r data/tokenizer "$OUT/data/"

is_system_library() {
  case $(basename "$1") in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libresolv.so*|libutil.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas*|libnccl.so*|libnvidia*|libnvJitLink*) return 0 ;;
  esac
  return 1
}

for exe in "$OUT"/bin/* "$OUT"/tests/*_test "$OUT"/tests/*_bench; do
  [[ -f $exe ]] || continue
  ldd "$exe" | awk '/=> \// {print $3}' | while read -r lib; do
    is_system_library "$lib" && continue
    [[ -f $OUT/lib/$(basename "$lib") ]] || cp -L "$lib" "$OUT/lib/"
  done
  patchelf --set-rpath '$ORIGIN/../lib:/usr/local/cuda/lib64' "$exe"
done
strip --strip-unneeded "$OUT"/bin/* "$OUT"/tests/*_test "$OUT"/tests/*_bench "$OUT"/lib/*.so* 2>/dev/null || true
for lib in "$OUT"/lib/*; do patchelf --set-rpath '$ORIGIN' "$lib"; done

tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" | xz -T0 -6 > "$OUT.tar.xz"
du -sh "$OUT" "$OUT.tar.xz"
