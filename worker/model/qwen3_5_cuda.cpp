// The CUDA instantiation of the model (BF16; block-FP8 linear weights kept FP8).
#include "worker/backend/cuda_backend.h"
#include "worker/model/qwen3_5_impl.h"

namespace ds::worker {

std::unique_ptr<Model> make_cuda_model(const ModelOptions& options, const weights::Checkpoint* checkpoint,
                                       uint64_t seed) {
  return std::make_unique<HybridModel<CudaBackend>>(options, checkpoint, seed);
}

}  // namespace ds::worker
