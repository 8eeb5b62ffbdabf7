// NcclCommunicator on real GPUs: one rank, then every visible GPU as a group (one thread per
// GPU, each with its own communicator, as one process per GPU would have). Values are small
// integers, so every summation order gives the exact result.
#include <cuda_runtime.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cuda_check.h"
#include "kernels/common.h"
#include "worker/comm/nccl_communicator.h"

namespace ds::worker {
namespace {

int visible_gpus() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

float value_of(int rank, size_t i) { return float((rank + 1) * (int(i % 13) - 6)); }

// One rank's whole job; returns "" or what went wrong (gtest assertions stay on the main thread).
std::string run_rank(const std::string& id, int rank, int world, size_t count) {
  try {
    NcclCommunicator comm(id, rank, world, rank);
    if (comm.rank() != rank || comm.world_size() != world) return "rank/world mismatch";
    cudaStream_t stream;
    if (cudaStreamCreate(&stream) != cudaSuccess) return "cudaStreamCreate failed";
    std::vector<float> host(count);
    for (size_t i = 0; i < count; ++i) host[i] = value_of(rank, i);
    std::vector<kernels::bf16> host16(count);
    for (size_t i = 0; i < count; ++i) host16[i] = kernels::float_to_bf16(host[i]);
    float *data = nullptr, *gathered = nullptr;
    kernels::bf16* data16 = nullptr;
    cudaMalloc(&data, count * 4);
    cudaMalloc(&data16, count * 2);
    cudaMalloc(&gathered, count * 4 * world);
    cudaMemcpy(data, host.data(), count * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(data16, host16.data(), count * 2, cudaMemcpyHostToDevice);
    cudaMemset(gathered, 0xff, count * 4 * world);  // poison: NaNs unless written

    comm.all_gather(data, gathered, count, CommDType::kFloat32, stream);
    comm.all_reduce_sum(data, count, CommDType::kFloat32, stream);
    comm.all_reduce_sum(data16, count, CommDType::kBFloat16, stream);
    if (cudaStreamSynchronize(stream) != cudaSuccess) return "stream sync failed";

    std::vector<float> sum(count), all(count * world);
    cudaMemcpy(sum.data(), data, count * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(host16.data(), data16, count * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(all.data(), gathered, count * 4 * world, cudaMemcpyDeviceToHost);
    cudaFree(data);
    cudaFree(data16);
    cudaFree(gathered);
    cudaStreamDestroy(stream);
    const float scale = float(world * (world + 1) / 2);
    for (size_t i = 0; i < count; ++i) {
      const float want = scale * float(int(i % 13) - 6);
      if (sum[i] != want) return "fp32 all-reduce element " + std::to_string(i) + ": " + std::to_string(sum[i]);
      if (kernels::bf16_to_float(host16[i]) != want) return "bf16 all-reduce element " + std::to_string(i);
    }
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < count; ++i) {
        if (all[r * count + i] != value_of(r, i)) return "all-gather block " + std::to_string(r) + " element " + std::to_string(i);
      }
    }
    return "";
  } catch (const std::exception& e) {
    return std::string("exception: ") + e.what();
  }
}

void run_group(int world, size_t count) {
  const std::string id = new_nccl_unique_id();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back([&, r] { errors[r] = run_rank(id, r, world, count); });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "world " << world << ", rank " << r;
}

TEST(NcclCommunicator, OneRank) { run_group(1, 100003); }

TEST(NcclCommunicator, EveryVisibleGpuAsOneGroup) {
  const int n = visible_gpus();
  if (n < 2) GTEST_SKIP() << "one GPU visible: the multi-rank case needs two or more";
  for (int world = 2; world <= n; world *= 2) run_group(world, (1 << 20) + 7);
  if ((n & (n - 1)) != 0) run_group(n, 4099);
}

TEST(NcclCommunicator, AMalformedUniqueIdIsRefused) {
  EXPECT_THROW(NcclCommunicator("short", 0, 1, 0), std::invalid_argument);
  const std::string id = new_nccl_unique_id();
  EXPECT_THROW(NcclCommunicator(id, 2, 2, 0), std::invalid_argument);
}

TEST(NcclCommunicator, ARankThatNeverJoinsGivesATimeoutNotAHang) {
  const auto start = std::chrono::steady_clock::now();
  try {
    NcclCommunicator alone(new_nccl_unique_id(), 0, 2, 0, std::chrono::seconds(3));
    FAIL() << "init of a 2-rank group returned with one rank";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace
}  // namespace ds::worker
