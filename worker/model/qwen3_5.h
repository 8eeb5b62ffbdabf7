// The Qwen3.5 (dense and MoE) / Qwen3-Next model on one tensor-parallel rank: weights, workspace,
// KV page pool and GDN state pool, and the forward over one step's packed tokens. The layers are
// assembled from the config (layer_types: Gated DeltaNet or gated full attention; dense or MoE MLP).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/sampling.h"
#include "weights/checkpoint.h"
#include "weights/model_config.h"
#include "weights/rank_weights.h"
#include "worker/communicator.h"
#include "worker/model/step_inputs.h"
#include "worker/model_runner.h"

namespace ds::worker {

struct ModelOptions {
  weights::ModelConfig config;
  weights::GdnProjectionForm gdn_projection = weights::GdnProjectionForm::kFused;
  kernels::cuda::Fp8Numerics fp8_numerics = kernels::cuda::Fp8Numerics::kW8A8;  // CUDA, block-FP8 only
  int max_tokens = 8192;  // most tokens one step may carry (sizes the activation workspace)
  int kv_page_size = 64;
  // CUDA: decode steps of up to this many sequences are captured once per shape as a CUDA graph and
  // replayed (0: every step launches its kernels one by one). Needs a capturable communicator.
  int cuda_graph_max_bs = 64;
  double mem_fraction = 0.9;
  int cuda_device = 0;
  Communicator* comm = nullptr;  // required (a single-rank communicator for world 1)
};

class Model {
 public:
  virtual ~Model() = default;

  virtual const weights::ModelConfig& config() const = 0;
  virtual MemoryReport memory_report() const = 0;
  virtual void allocate_pools(int num_kv_pages, int num_gdn_slots) = 0;
  virtual int num_kv_pages() const = 0;
  virtual int num_gdn_slots() const = 0;

  // Runs every layer over the step's tokens (updating the KV pages and GDN slots) and computes the
  // fp32 logits of the given token rows (rows of `in`'s packed order), kept where the backend
  // computes for sample() and copy_logits(). Every rank ends with the same logits.
  virtual void forward(const StepInputs& in, const std::vector<int32_t>& logit_rows) = 0;
  // One token (and its logprob) per logits row of the last forward, params[row] for row.
  virtual void sample(const std::vector<kernels::SamplingParams>& params, std::vector<int32_t>& tokens,
                      std::vector<float>& logprobs) = 0;
  // The last forward's logits on the host, [rows][vocab_size] (padded vocabulary columns removed).
  virtual void copy_logits(std::vector<float>& logits) const = 0;
  // Decode-step CUDA graphs held now (0 on the CPU or with graphs off).
  virtual size_t cuda_graphs() const = 0;
};

// Loads the rank's weights from `checkpoint`, or dummy weights from `seed` when it is null.
std::unique_ptr<Model> make_cpu_model(const ModelOptions& options, const weights::Checkpoint* checkpoint,
                                      uint64_t seed);
std::unique_ptr<Model> make_cuda_model(const ModelOptions& options, const weights::Checkpoint* checkpoint,
                                       uint64_t seed);

}  // namespace ds::worker
