#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace ds::worker {
namespace {

void check_nccl(ncclResult_t result, const char* what, ncclComm_t comm = nullptr) {
  if (result == ncclSuccess) return;
  std::string message = std::string("NCCL ") + what + " failed: " + ncclGetErrorString(result);
  if (const char* detail = ncclGetLastError(comm); detail && *detail) message += std::string(" (") + detail + ")";
  throw std::runtime_error(message);
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

ncclDataType_t nccl_type(CommDType dtype) { return dtype == CommDType::kFloat32 ? ncclFloat32 : ncclBfloat16; }

}  // namespace

std::string new_nccl_unique_id() {
  disable_nccl_nvls_unless_set();
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

void disable_nccl_nvls_unless_set() { ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0); }

NcclCommunicator::NcclCommunicator(const std::string& unique_id, int rank, int world_size, int device,
                                   std::chrono::milliseconds init_timeout)
    : rank_(rank), world_(world_size), device_(device) {
  if (unique_id.size() != NCCL_UNIQUE_ID_BYTES) {
    throw std::invalid_argument("NCCL unique id has " + std::to_string(unique_id.size()) + " bytes, expected " +
                                std::to_string(NCCL_UNIQUE_ID_BYTES) + " (Init.nccl_unique_id from GPU rank 0's Hello)");
  }
  if (rank < 0 || rank >= world_size) {
    throw std::invalid_argument("NCCL rank " + std::to_string(rank) + " outside world size " + std::to_string(world_size));
  }
  disable_nccl_nvls_unless_set();
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id.data(), NCCL_UNIQUE_ID_BYTES);
  ncclConfig_t non_blocking = NCCL_CONFIG_INITIALIZER;
  non_blocking.blocking = 0;
  finish(ncclCommInitRankConfig(&joined_, world_size, id, rank, &non_blocking), "ncclCommInitRank", init_timeout,
         joined_);
  split_blocking_copy(init_timeout);
}

// NCCL runs the split as an asynchronous job of the non-blocking parent and stores the child's
// handle (atomically, from its own thread) only when the job ends, so the handle is awaited first,
// then the child's own initialisation state.
void NcclCommunicator::split_blocking_copy(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ncclConfig_t blocking = NCCL_CONFIG_INITIALIZER;
  blocking.blocking = 1;
  const ncclResult_t started = ncclCommSplit(joined_, /*color=*/0, /*key=*/rank_, &split_out_, &blocking);
  if (started != ncclInProgress) check_nccl(started, "ncclCommSplit", joined_);
  std::atomic_ref<ncclComm*> child(split_out_);
  while (child.load(std::memory_order_acquire) == nullptr) {
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(joined_);
      joined_ = nullptr;
      throw std::runtime_error("NCCL ncclCommSplit (rank " + std::to_string(rank_) + " of " + std::to_string(world_) +
                               "): no communicator after " + std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  comm_ = child.load(std::memory_order_acquire);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  finish(ncclInProgress, "ncclCommSplit", std::max(left, std::chrono::milliseconds(1)), comm_);
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
  if (joined_) ncclCommDestroy(joined_);
}

void NcclCommunicator::finish(int result, const char* what, std::chrono::milliseconds timeout, ncclComm*& comm) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ncclResult_t state = ncclResult_t(result);
  while (state == ncclInProgress) {
    const auto now = std::chrono::steady_clock::now();
    if (now > deadline) {
      ncclCommAbort(comm);
      comm = nullptr;
      throw std::runtime_error(std::string("NCCL ") + what + " (rank " + std::to_string(rank_) + " of " +
                               std::to_string(world_) + "): timed out after " + std::to_string(timeout.count()) +
                               " ms; did every rank join with the same unique id?");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
  }
  check_nccl(state, what, comm);
}

void NcclCommunicator::all_reduce_sum(void* data, size_t count, CommDType dtype, cudaStream_t stream) {
  check_nccl(ncclAllReduce(data, data, count, nccl_type(dtype), ncclSum, comm_, stream), "ncclAllReduce", comm_);
}

void NcclCommunicator::all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t stream) {
  check_nccl(ncclAllGather(in, out, count, nccl_type(dtype), comm_, stream), "ncclAllGather", comm_);
}

}  // namespace ds::worker
