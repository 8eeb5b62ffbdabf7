// Collectives between GPU ranks through NCCL (one process per GPU, or one thread per GPU in
// tests and benchmarks). The unique id is made by rank 0 (new_nccl_unique_id) and handed to
// every rank by the front end (Hello.nccl_unique_id -> Init.nccl_unique_id).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "worker/communicator.h"

struct ncclComm;

namespace ds::worker {

// A fresh ncclGetUniqueId() as bytes (NCCL_UNIQUE_ID_BYTES long). The process that makes it
// hosts NCCL's bootstrap root, so it must stay alive until every rank has initialised.
std::string new_nccl_unique_id();

// NCCL's NVLink SHARP (NVLS) needs multicast objects that the GPU hosts we use do not allow;
// sets NCCL_NVLS_ENABLE=0 unless the environment already says otherwise. Call before the
// first NCCL call of the process.
void disable_nccl_nvls_unless_set();

// Joining is non-blocking, so that a rank that never joins gives an error after a timeout instead
// of a hang. Collectives then go through a blocking copy of the communicator (ncclCommSplit): on a
// non-blocking one every enqueue returns "in progress" and must be polled, which cost 70–150 µs
// per small all-reduce on H100s, and decode steps run two all-reduces per layer. Collectives
// enqueue asynchronously on the stream either way; a peer that dies mid-collective stalls the
// stream, and the front end, which sees that worker's control stream break, stops the group.
class NcclCommunicator final : public Communicator {
 public:
  // Selects `device` on the calling thread and joins the group: blocks until every rank has
  // joined, or throws after init_timeout.
  NcclCommunicator(const std::string& unique_id, int rank, int world_size, int device,
                   std::chrono::milliseconds init_timeout = std::chrono::minutes(2));
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  // Enqueued on `stream`; data is device memory of this rank's GPU.
  void all_reduce_sum(void* data, size_t count, CommDType dtype, cudaStream_t stream) override;
  void all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t stream) override;
  bool graph_capturable() const override { return true; }

 private:
  // Waits while NCCL reports `comm`'s call in progress; throws on an error or after `timeout`
  // (aborting `comm`).
  void finish(int result, const char* what, std::chrono::milliseconds timeout, ncclComm*& comm);

  // Splits joined_ into comm_ (blocking), within `timeout`.
  void split_blocking_copy(std::chrono::milliseconds timeout);

  ncclComm* joined_ = nullptr;     // non-blocking: the join, with its timeout
  ncclComm* split_out_ = nullptr;  // where NCCL's split job stores comm_ (from another thread)
  ncclComm* comm_ = nullptr;    // blocking copy of joined_: the collectives
  int rank_ = 0;
  int world_ = 1;
  int device_ = 0;
};

}  // namespace ds::worker
