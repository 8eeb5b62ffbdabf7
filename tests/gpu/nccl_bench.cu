// All-reduce bus bandwidth through NcclCommunicator, printed like nccl-tests' all_reduce_perf:
// for 1..N GPUs (one thread and one communicator per GPU), sizes 8 KB .. 256 MB
// (decode steps all-reduce a few KB: hidden × tokens × 2 bytes).
//   algbw = bytes / time;  busbw = algbw * 2 (n - 1) / n  (what each link carries; compare it
//   with the NVLink bandwidth of the card: H100 SXM NVLink 4 is 450 GB/s per direction).
// Usage: nccl_bench [max_gpus] [iterations] [float|bfloat16]
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "kernels/common.h"
#include "worker/comm/nccl_communicator.h"

namespace {

using ds::worker::CommDType;
using ds::worker::NcclCommunicator;

#define CHECK_CUDA(expr)                                                                     \
  do {                                                                                       \
    cudaError_t err_ = (expr);                                                               \
    if (err_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "FAIL: %s: %s\n", #expr, cudaGetErrorString(err_));               \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

constexpr size_t kMinBytes = size_t(8) << 10;
constexpr size_t kMaxBytes = size_t(256) << 20;
constexpr int kWarmup = 5;

struct SizeResult {
  double us = 0;     // mean time of one all-reduce, slowest rank
  long wrong = 0;    // elements off the expected sum in the check run
};

// Fills `count` elements with `value` in the buffer's dtype. A pageable host-to-device cudaMemcpy
// may return before its DMA lands, and the collectives run on a non-blocking stream (which the
// legacy stream does not order), so the fill ends with a device synchronisation.
void fill(void* device, size_t count, CommDType dtype, float value) {
  if (dtype == CommDType::kFloat32) {
    std::vector<float> host(count, value);
    CHECK_CUDA(cudaMemcpy(device, host.data(), count * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<ds::kernels::bf16> host(count, ds::kernels::float_to_bf16(value));
    CHECK_CUDA(cudaMemcpy(device, host.data(), count * 2, cudaMemcpyHostToDevice));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
}

long count_wrong(const void* device, size_t count, CommDType dtype, float want) {
  long wrong = 0;
  if (dtype == CommDType::kFloat32) {
    std::vector<float> host(count);
    CHECK_CUDA(cudaMemcpy(host.data(), device, count * 4, cudaMemcpyDeviceToHost));
    for (float x : host) wrong += x != want;
  } else {
    std::vector<ds::kernels::bf16> host(count);
    CHECK_CUDA(cudaMemcpy(host.data(), device, count * 2, cudaMemcpyDeviceToHost));
    for (auto x : host) wrong += ds::kernels::bf16_to_float(x) != want;
  }
  return wrong;
}

// One GPU's side of the sweep; results[size index] is max-merged over ranks by the caller.
void run_rank(const std::string& id, int rank, int world, CommDType dtype, int iterations, std::barrier<>& sync,
              std::vector<std::vector<SizeResult>>& results) {
  NcclCommunicator comm(id, rank, world, rank);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* buffer = nullptr;
  CHECK_CUDA(cudaMalloc(&buffer, kMaxBytes));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  const size_t element = dtype == CommDType::kFloat32 ? 4 : 2;
  int index = 0;
  for (size_t bytes = kMinBytes; bytes <= kMaxBytes; bytes *= 2, ++index) {
    const size_t count = bytes / element;
    // Correctness first: rank r contributes r + 1, so every element must become n (n + 1) / 2.
    // The ranks are threads of one process, so NCCL reads peers' buffers directly: wait until every
    // rank is done with the previous size before overwriting this one.
    sync.arrive_and_wait();
    fill(buffer, count, dtype, float(rank + 1));
    comm.all_reduce_sum(buffer, count, dtype, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    results[rank][index].wrong = count_wrong(buffer, count, dtype, float(world * (world + 1) / 2));
    sync.arrive_and_wait();  // the peers may still be reading this buffer
    CHECK_CUDA(cudaMemset(buffer, 0, bytes));
    for (int i = 0; i < kWarmup; ++i) comm.all_reduce_sum(buffer, count, dtype, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    sync.arrive_and_wait();  // every rank starts timing together
    CHECK_CUDA(cudaEventRecord(start, stream));
    for (int i = 0; i < iterations; ++i) comm.all_reduce_sum(buffer, count, dtype, stream);
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    results[rank][index].us = 1000.0 * ms / iterations;
  }
  CHECK_CUDA(cudaFree(buffer));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  CHECK_CUDA(cudaStreamDestroy(stream));
}

// Returns the number of wrong elements over all sizes.
long sweep(int world, CommDType dtype, int iterations) {
  const int sizes = 16;  // 8 KB .. 256 MB
  std::vector<std::vector<SizeResult>> results(world, std::vector<SizeResult>(sizes));
  const std::string id = ds::worker::new_nccl_unique_id();
  std::barrier<> sync(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { run_rank(id, r, world, dtype, iterations, sync, results); });
  }
  for (auto& t : threads) t.join();

  const char* type = dtype == CommDType::kFloat32 ? "float" : "bfloat16";
  const size_t element = dtype == CommDType::kFloat32 ? 4 : 2;
  std::printf("#\n# nccl_bench all_reduce_sum, %d GPU(s), %d iterations after %d warm-up\n#\n", world, iterations, kWarmup);
  std::printf("# %12s %12s %9s %6s %10s %8s %8s %7s\n", "size(B)", "count", "type", "redop", "time(us)", "algbw",
              "busbw", "#wrong");
  long total_wrong = 0;
  double busbw_sum = 0;
  int index = 0;
  for (size_t bytes = kMinBytes; bytes <= kMaxBytes; bytes *= 2, ++index) {
    SizeResult worst;
    for (int r = 0; r < world; ++r) {
      worst.us = std::max(worst.us, results[r][index].us);
      worst.wrong += results[r][index].wrong;
    }
    const double algbw = double(bytes) / (worst.us * 1e-6) / 1e9;
    const double busbw = algbw * 2.0 * (world - 1) / world;
    busbw_sum += busbw;
    total_wrong += worst.wrong;
    std::printf("  %12zu %12zu %9s %6s %10.1f %8.2f %8.2f %7ld\n", bytes, bytes / element, type, "sum", worst.us, algbw,
                busbw, worst.wrong);
  }
  std::printf("# Out of bounds values : %ld %s\n", total_wrong, total_wrong ? "FAILED" : "OK");
  std::printf("# Avg bus bandwidth    : %.2f GB/s (%d GPUs)%s\n", busbw_sum / sizes, world,
              world == 1 ? ": one rank moves nothing, NCCL returns at once (the launch-cost floor)" : "");
  return total_wrong;
}

}  // namespace

int main(int argc, char** argv) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::printf("SKIPPED: no GPU visible\n");
    return 77;
  }
  const int max_gpus = argc > 1 ? std::min(std::atoi(argv[1]), gpus) : gpus;
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 20;
  const std::string type = argc > 3 ? argv[3] : "float";
  if (max_gpus < 1 || iterations < 1 || (type != "float" && type != "bfloat16")) {
    std::fprintf(stderr, "usage: %s [max_gpus>=1] [iterations>=1] [float|bfloat16]\n", argv[0]);
    return 2;
  }
  const CommDType dtype = type == "float" ? CommDType::kFloat32 : CommDType::kBFloat16;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %d x %s visible, NCCL_NVLS_ENABLE=%s\n", gpus, prop.name,
              std::getenv("NCCL_NVLS_ENABLE") ? std::getenv("NCCL_NVLS_ENABLE") : "(unset: the bench sets 0)");
  long wrong = 0;
  try {
    for (int world = 1; world <= max_gpus; ++world) wrong += sweep(world, dtype, iterations);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  std::printf(wrong ? "FAIL: %ld wrong elements\n" : "PASS: every all-reduce gave n(n+1)/2 everywhere\n", wrong);
  return wrong ? 1 : 0;
}
