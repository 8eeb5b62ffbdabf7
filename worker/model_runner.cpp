// ModelRunner::create: picks the backend from RunnerOptions.device, loads the checkpoint (or dummy
// weights), and runs steps: StepBatch -> StepInputs -> forward -> logits of the sampling rows ->
// kernels/sampling.h.
#include "worker/model_runner.h"

#include <cuda_runtime_api.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "kernels/sampling.h"
#include "weights/checkpoint.h"
#include "weights/model_config.h"
#include "weights/rank_weights.h"
#include "worker/backend/memory.h"
#include "worker/model/qwen3_5.h"
#include "worker/model/step_inputs.h"

namespace ds::worker {
namespace {

// "cpu" -> nullopt; "cuda" or "cuda:N" -> N.
std::optional<int> parse_cuda_device(const std::string& device) {
  if (device == "cpu") return std::nullopt;
  if (device == "cuda") return 0;
  if (device.starts_with("cuda:")) {
    const std::string index = device.substr(5);
    if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos) return std::stoi(index);
  }
  throw std::invalid_argument("device '" + device + "' is neither \"cpu\" nor \"cuda:N\"");
}

kernels::SamplingParams sampling_params(const SequenceStep& seq) {
  kernels::SamplingParams params;
  params.temperature = seq.sampling.temperature;
  params.top_k = seq.sampling.top_k;
  params.top_p = seq.sampling.top_p;
  params.min_p = seq.sampling.min_p;
  params.seed = seq.sampling.seed;
  params.step = seq.sample_index;
  return params;
}

class HybridModelRunner final : public ModelRunner {
 public:
  explicit HybridModelRunner(const RunnerOptions& options) : options_(options) {
    cuda_device_ = parse_cuda_device(options.device);
    const std::optional<int> cuda_device = cuda_device_;
    if (options.comm == nullptr) owned_comm_ = make_single_rank_communicator(cuda_device.has_value());
    if (cuda_device) check_cuda(cudaSetDevice(*cuda_device), ("cudaSetDevice(" + options.device + ")").c_str());

    std::optional<weights::Checkpoint> checkpoint;
    ModelOptions model_options;
    if (!options.model_dir.empty() && !options.dummy_weights) {
      checkpoint = weights::Checkpoint::open(options.model_dir);
      model_options.config = checkpoint->config();
    } else if (!options.model_dir.empty()) {
      model_options.config = weights::parse_model_config(options.model_dir + "/config.json");
    } else if (!options.preset.empty()) {
      if (!options.dummy_weights) throw std::invalid_argument("a preset has no weights: use dummy weights or a model dir");
      model_options.config = weights::preset_config(options.preset);
    } else {
      throw std::invalid_argument("RunnerOptions: neither model_dir nor preset is set");
    }
    model_options.gdn_projection = weights::parse_gdn_projection_form(options.gdn_projection);
    model_options.fp8_numerics = kernels::cuda::parse_fp8_numerics(options.fp8_numerics);
    model_options.max_tokens = options.max_num_batched_tokens;
    model_options.kv_page_size = options.kv_page_size;
    if (options.cuda_graph_max_bs < 0) throw std::invalid_argument("cuda_graph_max_bs must be >= 0");
    model_options.cuda_graph_max_bs = options.cuda_graph_max_bs;
    model_options.mem_fraction = options.mem_fraction;
    model_options.cuda_device = cuda_device.value_or(0);
    model_options.comm = options.comm != nullptr ? options.comm : owned_comm_.get();
    const weights::Checkpoint* source = checkpoint ? &*checkpoint : nullptr;
    model_ = cuda_device ? make_cuda_model(model_options, source, options.seed)
                         : make_cpu_model(model_options, source, options.seed);
  }

  MemoryReport memory_report() const override { return model_->memory_report(); }

  void allocate_pools(int num_kv_pages, int num_gdn_slots) override {
    model_->allocate_pools(num_kv_pages, num_gdn_slots);
  }

  std::vector<SampledToken> step(const std::vector<SequenceStep>& batch) override {
    // The current device is per host thread: the caller may step from another thread than create().
    if (cuda_device_) check_cuda(cudaSetDevice(*cuda_device_), "cudaSetDevice");
    const StepInputs in = build_step_inputs(batch, options_.kv_page_size, model_->num_kv_pages(),
                                            model_->num_gdn_slots(), model_->config().vocab_size);
    logits_on_host_ = false;
    model_->forward(in, in.sample_rows);
    std::vector<kernels::SamplingParams> params;
    for (int32_t seq : in.sample_seqs) params.push_back(sampling_params(batch[seq]));
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    model_->sample(params, tokens, logprobs);
    std::vector<SampledToken> sampled;
    for (size_t r = 0; r < tokens.size(); ++r) {
      sampled.push_back(SampledToken{batch[in.sample_seqs[r]].seq_id, tokens[r], logprobs[r]});
    }
    return sampled;
  }

  // Copied from the device only when asked (tests): the serving path never pays for it.
  const std::vector<float>& last_logits() const override {
    if (!logits_on_host_) {
      model_->copy_logits(last_logits_);
      logits_on_host_ = true;
    }
    return last_logits_;
  }
  int vocab_size() const override { return static_cast<int>(model_->config().vocab_size); }
  size_t cuda_graphs() const override { return model_->cuda_graphs(); }

 private:
  RunnerOptions options_;
  std::optional<int> cuda_device_;
  std::unique_ptr<Communicator> owned_comm_;
  std::unique_ptr<Model> model_;
  mutable std::vector<float> last_logits_;
  mutable bool logits_on_host_ = false;
};

}  // namespace

std::unique_ptr<ModelRunner> ModelRunner::create(const RunnerOptions& options) {
  return std::make_unique<HybridModelRunner>(options);
}

}  // namespace ds::worker
