// Collectives between the tensor-parallel ranks of one model. Two implementations: NCCL for GPU
// ranks and a host communicator (separate CPU processes over sockets) so TP runs in CI.
#pragma once

#include <cstddef>
#include <memory>

#include "kernels/common.h"

namespace ds::worker {

enum class CommDType { kFloat32, kBFloat16 };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: data holds `count` elements on this rank's device (host memory for CPU ranks).
  virtual void all_reduce_sum(void* data, size_t count, CommDType dtype, cudaStream_t stream) = 0;
  // out holds world_size * count elements; rank r's `in` lands at out + r * count.
  virtual void all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t stream) = 0;
  // Whether the collectives can be recorded into a CUDA graph (enqueued on the stream, no host work).
  virtual bool graph_capturable() const { return false; }
};

// World size 1: every collective is the identity (all_gather copies).
std::unique_ptr<Communicator> make_single_rank_communicator(bool device_memory);

}  // namespace ds::worker
