// The CPU (fp32 reference) instantiation of the model.
#include "worker/backend/cpu_backend.h"
#include "worker/model/qwen3_5_impl.h"

namespace ds::worker {

std::unique_ptr<Model> make_cpu_model(const ModelOptions& options, const weights::Checkpoint* checkpoint,
                                      uint64_t seed) {
  return std::make_unique<HybridModel<CpuBackend>>(options, checkpoint, seed);
}

}  // namespace ds::worker
