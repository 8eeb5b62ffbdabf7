// Helpers for the kernel microbenchmarks: checked CUDA calls, median timing with CUDA events, and
// the ceilings: BF16 GEMM peak (H100's, measured; the H200 has the same SMs and clocks) and the
// card's copy bandwidth, measured at run time (copy_gbs).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/common.h"

namespace ds::kernels::bench {

inline constexpr double kPeakBf16TflopS = 790.0;  // measured dense BF16 GEMM ceiling (H100 80GB HBM3)

// Token counts from a command-line argument "T,T,..." (each in [1, max]), or `fallback` when
// `arg` is null; exits with status 2 and a message naming `program` on anything else.
inline std::vector<int64_t> token_counts(const char* program, const char* arg, std::vector<int64_t> fallback,
                                         int64_t max = INT64_MAX) {
  if (!arg) return fallback;
  std::vector<int64_t> counts;
  std::stringstream list(arg);
  for (std::string item; std::getline(list, item, ',');) {
    char* end = nullptr;
    const long long T = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || T < 1 || T > max) {
      const std::string range = max == INT64_MAX ? "positive integers" : "integers in [1, " + std::to_string(max) + "]";
      std::fprintf(stderr, "%s: token counts must be %s separated by commas, got '%s'\n", program, range.c_str(), arg);
      std::exit(2);
    }
    counts.push_back(T);
  }
  return counts;
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "FAILED: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

// The card's device-to-device copy bandwidth (GB/s, bytes read + written), measured once per
// process: the ceiling of the "% copy" columns, so that they mean the same on every card (measured:
// H100 80GB HBM3 ~3.02 TB/s, H200 ~4.24 TB/s with these copies).
inline double copy_gbs() {
  static const double gbs = [] {
    constexpr size_t kBytes = size_t(1) << 30;
    constexpr int kCopies = 10;
    void *src = nullptr, *dst = nullptr;
    check(cudaMalloc(&src, kBytes), "copy ceiling: cudaMalloc");
    check(cudaMalloc(&dst, kBytes), "copy ceiling: cudaMalloc");
    check(cudaMemset(src, 1, kBytes), "copy ceiling: cudaMemset");
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "copy ceiling: event");
    check(cudaEventCreate(&stop), "copy ceiling: event");
    for (int i = 0; i < 2; ++i) check(cudaMemcpy(dst, src, kBytes, cudaMemcpyDeviceToDevice), "copy ceiling: warm-up");
    check(cudaEventRecord(start), "copy ceiling: event");
    for (int i = 0; i < kCopies; ++i) {
      check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice), "copy ceiling: copy");
    }
    check(cudaEventRecord(stop), "copy ceiling: event");
    check(cudaEventSynchronize(stop), "copy ceiling: event");
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, start, stop), "copy ceiling: event");
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

// Median over `batches` of the milliseconds one batch of `calls` back-to-back runs takes, after
// `warmup` runs; run(i) gets a running index so callers can rotate input copies larger than L2.
inline double median_batch_ms(const std::function<void(int)>& run, int calls, int batches, int warmup) {
  for (int i = 0; i < warmup; ++i) run(i);
  check(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<float> ms(static_cast<size_t>(batches));
  int i = warmup;
  for (float& m : ms) {
    check(cudaEventRecord(start), "record");
    for (int c = 0; c < calls; ++c) run(i++);
    check(cudaEventRecord(stop), "record");
    check(cudaEventSynchronize(stop), "sync");
    check(cudaEventElapsedTime(&m, start, stop), "elapsed");
  }
  check(cudaGetLastError(), "benchmarked kernels");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return double(ms[ms.size() / 2]);
}

// Median time in microseconds of one run alone between two events (launch latency included), over
// `iters` runs after `warmup` runs.
inline double median_us(const std::function<void(int)>& run, int warmup = 5, int iters = 30) {
  return median_batch_ms(run, 1, iters, warmup) * 1e3;
}

// Per-call time in microseconds of `calls` calls queued back to back (the host runs ahead of the
// GPU, as in a forward pass, so launch latency is hidden and each call starts as the previous one
// ends): the median over `reps` batches after `warmup` calls.
inline double queued_us(const std::function<void(int)>& run, int calls = 20, int reps = 7, int warmup = 5) {
  return median_batch_ms(run, calls, reps, warmup) * 1e3 / calls;
}

template <typename T>
T* device_alloc(size_t count) {
  T* p = nullptr;
  check(cudaMalloc(&p, count * sizeof(T)), "cudaMalloc");
  return p;
}

// Fills n bf16 values with N(0, stddev) (generated on the host once, copied in pieces).
inline void fill_random_bf16(bf16* dst, size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  const size_t piece = size_t(1) << 22;
  std::vector<bf16> host(std::min(n, piece));
  for (auto& v : host) v = float_to_bf16(dist(rng));
  for (size_t off = 0; off < n; off += piece) {
    const size_t count = std::min(piece, n - off);
    check(cudaMemcpy(dst + off, host.data(), count * sizeof(bf16), cudaMemcpyHostToDevice), "fill");
  }
}

}  // namespace ds::kernels::bench
