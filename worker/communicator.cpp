#include "worker/communicator.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace ds::worker {
namespace {

size_t element_size(CommDType dtype) { return dtype == CommDType::kFloat32 ? 4 : 2; }

// World size 1: all-reduce is the identity and all-gather copies `in` to `out`.
class SingleRankCommunicator final : public Communicator {
 public:
  explicit SingleRankCommunicator(bool device_memory) : device_memory_(device_memory) {}

  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  bool graph_capturable() const override { return device_memory_; }

  void all_reduce_sum(void*, size_t, CommDType, cudaStream_t) override {}

  void all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t stream) override {
    const size_t bytes = count * element_size(dtype);
    if (in == out || bytes == 0) return;
    if (!device_memory_) {
      std::memmove(out, in, bytes);
      return;
    }
    const cudaError_t err = cudaMemcpyAsync(out, in, bytes, cudaMemcpyDeviceToDevice, stream);
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("single-rank all_gather: cudaMemcpyAsync failed: ") +
                               cudaGetErrorString(err));
    }
  }

 private:
  bool device_memory_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_rank_communicator(bool device_memory) {
  return std::make_unique<SingleRankCommunicator>(device_memory);
}

}  // namespace ds::worker
