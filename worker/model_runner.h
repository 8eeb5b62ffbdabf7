// The worker's engine: owns the model shard, its caches and the sampler; runs one step at a time.
// The worker process (control plane) translates proto StepPlans into StepBatch and calls step().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/communicator.h"

namespace ds::worker {

struct RunnerOptions {
  std::string model_dir;               // checkpoint folder, or empty with preset
  std::string preset;                  // weights/presets.h name, used when model_dir is empty
  bool dummy_weights = false;          // --load-format dummy
  uint64_t seed = 0;                   // dummy weights
  std::string device = "cpu";          // "cpu" or "cuda:N"
  std::string gdn_projection = "fused";  // "fused" | "split"
  std::string fp8_numerics = "w8a8";     // block-FP8 linears on GPUs: "w8a8" | "w8a16" | "fastest"
  int kv_page_size = 64;               // tokens per KV page
  double mem_fraction = 0.9;           // of the device (or host) memory the worker may use
  int max_num_batched_tokens = 8192;   // sizes the activation workspace
  int cuda_graph_max_bs = 64;          // GPUs: decode steps of up to this many sequences replay CUDA graphs (0: off)
  Communicator* comm = nullptr;        // not owned; single rank when null
};

struct MemoryReport {
  uint64_t free_bytes = 0;      // left for caches after weights and workspace, within mem_fraction
  uint64_t weight_bytes = 0;
  uint64_t kv_page_bytes = 0;   // one page of K and V for every full-attention layer on this rank
  uint64_t gdn_slot_bytes = 0;  // one slot's conv + recurrent state for every GDN layer on this rank
};

struct SamplingConfig {
  float temperature = 0.f;  // 0: greedy
  float top_p = 1.f;
  int top_k = 0;            // 0: off
  float min_p = 0.f;
  uint64_t seed = 0;
  bool logprobs = false;
};

// One sequence's part of a step: a prefill chunk (continuing at start_pos) or one decode token.
struct SequenceStep {
  uint64_t seq_id = 0;
  int gdn_slot = 0;
  bool reset_slot = false;              // zero the slot's conv and recurrent state first
  int start_pos = 0;                    // position of tokens[0]
  std::vector<int32_t> tokens;
  std::vector<int32_t> page_table;      // the sequence's whole KV page table so far (covers start_pos + tokens)
  bool sample = false;                  // sample after the last token
  SamplingConfig sampling;
  uint64_t sample_index = 0;            // how many tokens this sequence sampled before (seeds the RNG stream)
};

struct SampledToken {
  uint64_t seq_id = 0;
  int32_t token_id = 0;
  float logprob = 0.f;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  static std::unique_ptr<ModelRunner> create(const RunnerOptions& options);  // loads the weights

  virtual MemoryReport memory_report() const = 0;
  virtual void allocate_pools(int num_kv_pages, int num_gdn_slots) = 0;  // slot 0 is scratch
  // Runs one forward over all sequences; returns one token per sequence with sample = true, in order.
  // Every rank calls it with the same batch; all ranks return the same tokens.
  virtual std::vector<SampledToken> step(const std::vector<SequenceStep>& batch) = 0;
  // For tests: the fp32 logits [num sampling sequences][vocab] of the last step().
  virtual const std::vector<float>& last_logits() const = 0;
  virtual int vocab_size() const = 0;
  // Decode-step CUDA graphs captured and held now (0 on the CPU or with graphs off).
  virtual size_t cuda_graphs() const = 0;
};

}  // namespace ds::worker
