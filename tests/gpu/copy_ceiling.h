// The card's device-to-device copy bandwidth, measured once per benchmark process: the ceiling the
// benchmarks' "% copy" columns are relative to, so that they mean the same on every card (measured:
// H100 80GB HBM3 ~3.02 TB/s, H200 ~4.27 TB/s; bytes read + written).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace ds::kernels::bench {

inline double copy_gbs() {
  static const double gbs = [] {
    const auto check = [](cudaError_t err) {
      if (err != cudaSuccess) {
        std::fprintf(stderr, "FAILED: copy ceiling measurement: %s\n", cudaGetErrorString(err));
        std::exit(1);
      }
    };
    constexpr size_t kBytes = size_t(1) << 30;
    constexpr int kCopies = 10;
    void *src = nullptr, *dst = nullptr;
    check(cudaMalloc(&src, kBytes));
    check(cudaMalloc(&dst, kBytes));
    check(cudaMemset(src, 1, kBytes));
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start));
    check(cudaEventCreate(&stop));
    for (int i = 0; i < 2; ++i) check(cudaMemcpy(dst, src, kBytes, cudaMemcpyDeviceToDevice));
    check(cudaEventRecord(start));
    for (int i = 0; i < kCopies; ++i) check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice));
    check(cudaEventRecord(stop));
    check(cudaEventSynchronize(stop));
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, start, stop));
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaFree(src);
    cudaFree(dst);
    const double measured = 2.0 * double(kBytes) * kCopies / (double(ms) * 1e-3) / 1e9;
    std::fprintf(stderr, "device-to-device copy: %.0f GB/s (measured: the %%copy ceiling)\n", measured);
    return measured;
  }();
  return gbs;
}

}  // namespace ds::kernels::bench
