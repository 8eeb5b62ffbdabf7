// Timing for the GDN microbenchmarks: CUDA events after warm-up, median of many runs, and a
// rotation index so that each run can touch a different copy of its inputs (sets larger than L2).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "tests/gpu/kernels_bench_util.h"

namespace ds::kernels::gpu_bench {

// Checked CUDA calls and the ceiling of the memory-bound kernels (the card's copy bandwidth), as
// the other kernel benchmarks have them.
using bench::check;
using bench::copy_gbs;

// The name of GPU 0; without a visible GPU the benchmark reports itself skipped (exit code 77).
inline std::string gpu_name_or_skip() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no GPU\n");
    std::exit(77);
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return prop.name;
}

inline void free_all(std::initializer_list<void*> buffers) {
  for (void* p : buffers) cudaFree(p);
}

// Median time in microseconds of `run(i)` (i = run index, for rotating inputs) on `stream`, each
// call between its own pair of events; `before_each` (untimed) is enqueued ahead of every call.
inline double median_us(const std::function<void(int)>& run, cudaStream_t stream, int warmup = 5, int iters = 30,
                        const std::function<void()>& before_each = {}) {
  for (int i = 0; i < warmup; ++i) run(i);
  check(cudaStreamSynchronize(stream), "warm-up");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    if (before_each) before_each();
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    run(warmup + i);
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms * 1000.0);
  }
  check(cudaGetLastError(), "benchmarked kernels");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Per-call time the way Triton's do_bench takes it (the method behind GPU.md's SGLang and FLA
// figures): a 256 MB memset before each call flushes L2 and keeps the GPU busy, so the call's launch
// is queued behind it and the events time the kernel on a cold L2, not the host's launch latency.
inline double do_bench_us(const std::function<void(int)>& run, cudaStream_t stream) {
  constexpr size_t kFlushBytes = size_t(256) << 20;
  void* flush = nullptr;
  check(cudaMalloc(&flush, kFlushBytes), "cudaMalloc L2 flush buffer");
  const double us =
      median_us(run, stream, 5, 30, [&] { check(cudaMemsetAsync(flush, 0, kFlushBytes, stream), "L2 flush"); });
  check(cudaFree(flush), "cudaFree L2 flush buffer");
  return us;
}

// Time per call in microseconds of `run(i)` replayed from a CUDA graph of `calls` captured calls
// (median over `reps` graph launches): the in-graph cost, without per-launch CPU overhead, as the
// server's decode step runs it.
inline double graph_us(const std::function<void(int)>& run, cudaStream_t stream, int calls = 20, int reps = 10) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  for (int i = 0; i < calls; ++i) run(i);
  check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  const double us = median_us([&](int) { check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch"); }, stream, 2, reps);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return us / calls;
}

// Number of copies of a `bytes`-sized working set needed to exceed 4x the 50 MB L2 (at least 2).
inline int rotation_copies(size_t bytes) {
  const size_t target = size_t(200) << 20;
  return int(std::max<size_t>(2, (target + bytes - 1) / std::max<size_t>(bytes, 1)));
}

// Device memory of `bytes` filled with small random-ish BF16/fp32-safe bytes (never zeros).
inline void* device_random(size_t bytes, unsigned seed) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  std::vector<unsigned short> host(bytes / 2 + 1);
  unsigned x = seed * 2654435761u + 1;
  for (auto& v : host) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<unsigned short>(0x3c00u | ((x >> 16) & 0x00ffu) | ((x >> 8) & 0x8000u));  // bf16 in ±[2^-7, 2^-6)
  }
  check(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

}  // namespace ds::kernels::gpu_bench
