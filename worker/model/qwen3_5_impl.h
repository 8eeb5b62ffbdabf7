// The model, written once against a backend (CpuBackend: fp32; CudaBackend: BF16, block-FP8 linear
// weights kept FP8). Included only by qwen3_5_cpu.cpp and qwen3_5_cuda.cpp, which instantiate it.
//
// Per step, with the residual stream kept apart from the normalised activations:
//   residual = embed(ids) (vocab-parallel, all-reduced); normed = rms_norm(residual, ln_0)
//   per layer i: delta = mixer_i(normed) (all-reduced); residual += delta; normed = rms_norm(residual, post_ln_i)
//                delta = mlp_i(normed) (all-reduced); residual += delta; normed = rms_norm(residual, ln_{i+1} or final)
//   logits = lm_head(normed[rows]) (vocab-parallel, all-gathered)
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gdn_decode.h"
#include "kernels/gdn_projection.h"
#include "kernels/gdn_types.h"
#include "kernels/moe.h"
#include "kernels/rope.h"
#include "weights/rank_weights.h"
#include "worker/backend/memory.h"
#include "worker/backend/step_graphs.h"
#include "worker/cache/gdn_state_pool.h"
#include "worker/cache/kv_page_pool.h"
#include "worker/model/qwen3_5.h"

namespace ds::worker {

template <class Backend>
class HybridModel final : public Model {
  using T = typename Backend::T;
  using Linear = LinearWeight<T>;

  // Device pointers into the step's uploaded int32 metadata.
  struct Meta {
    const int32_t* token_ids;
    const int32_t* positions;
    const int32_t* cu_seqlens;
    const int32_t* prefill_cu_seqlens;
    const int32_t* gdn_slots;
    const int32_t* context_lens;
    const int32_t* page_table;
    const int32_t* logit_rows;
  };

 public:
  HybridModel(const ModelOptions& options, const weights::Checkpoint* checkpoint, uint64_t seed)
      : options_(options),
        config_(options.config),
        comm_(options.comm),
        dims_(weights::rank_dims(config_, comm_->rank(), comm_->world_size())),
        gdn_dims_{dims_.key_heads, dims_.value_heads, config_.linear_key_head_dim, config_.linear_value_head_dim},
        backend_(limits()) {
    if (options.max_tokens <= 0) throw std::invalid_argument("max_tokens must be positive");
    load_weights(checkpoint, seed);
    bind_layers();
    allocate_workspace();
  }

  const weights::ModelConfig& config() const override { return config_; }

  MemoryReport memory_report() const override {
    MemoryReport report;
    report.weight_bytes = weight_bytes_;
    report.free_bytes = cache_memory_budget(Backend::kMemory, options_.mem_fraction, weight_bytes_ + workspace_bytes_);
    report.kv_page_bytes = kv_geometry().page_bytes();
    report.gdn_slot_bytes = GdnStatePool::slot_bytes(gdn_dims_, num_gdn_layers_);
    return report;
  }

  // Refuses pools that do not fit the memory left within mem_fraction, naming the sizes.
  void allocate_pools(int num_kv_pages, int num_gdn_slots) override {
    graphs_.clear();  // they address the old pools
    kv_pool_.reset();
    gdn_pool_.reset();
    const MemoryReport report = memory_report();
    const uint64_t need = report.kv_page_bytes * static_cast<uint64_t>(std::max(num_kv_pages, 0)) +
                          report.gdn_slot_bytes * static_cast<uint64_t>(std::max(num_gdn_slots, 0));
    if (need > report.free_bytes) {
      throw std::runtime_error("cache pools of " + std::to_string(num_kv_pages) + " KV pages (" +
                               std::to_string(report.kv_page_bytes) + " bytes each) and " +
                               std::to_string(num_gdn_slots) + " GDN slots (" + std::to_string(report.gdn_slot_bytes) +
                               " bytes each) need " + std::to_string(need) + " bytes; only " +
                               std::to_string(report.free_bytes) + " are free within mem_fraction " +
                               std::to_string(options_.mem_fraction));
    }
    kv_pool_ = std::make_unique<KvPagePool>(Backend::kMemory, kv_geometry(), num_kv_pages);
    gdn_pool_ = std::make_unique<GdnStatePool>(Backend::kMemory, gdn_dims_, num_gdn_layers_, num_gdn_slots);
  }
  int num_kv_pages() const override { return kv_pool_ ? kv_pool_->num_pages() : 0; }
  int num_gdn_slots() const override { return gdn_pool_ ? gdn_pool_->num_slots() : 0; }

  void forward(const StepInputs& in, const std::vector<int32_t>& logit_rows) override {
    if (!kv_pool_ || !gdn_pool_) throw std::logic_error("forward before allocate_pools");
    if (in.num_tokens > options_.max_tokens) {
      throw std::invalid_argument("step of " + std::to_string(in.num_tokens) + " tokens exceeds max_num_batched_tokens " +
                                  std::to_string(options_.max_tokens));
    }
    if (graphable(in)) {
      forward_graphed(in, logit_rows);
      return;
    }
    const Meta meta = upload_meta(in, logit_rows);
    for (int32_t slot : in.reset_slots) gdn_pool_->reset_slot(slot, backend_.stream());
    place_logits(static_cast<int64_t>(logit_rows.size()));
    run_layers(in, meta);
  }

  size_t cuda_graphs() const override { return graphs_.size(); }

 private:
  // ---- decode-step CUDA graphs ------------------------------------------------------------------
  // A pure decode step of up to cuda_graph_max_bs sequences replays the graph captured for its key
  // (StepGraphs::Key: sequences, logits rows, KV length): the first step of a key runs eagerly (its
  // GEMM shapes get timed, see GemmRunner) and is then captured. Attention is laid out for the KV
  // length rounded up (graph_kv_len, step_inputs.h), so one graph serves a range of contexts. Steps with prefill
  // chunks or slot resets, the CPU backend and host communicators run eagerly.
  static constexpr size_t kMaxGraphs = 256;  // each holds ~10 nodes per layer

  bool graphable(const StepInputs& in) const {
    // A pure decode step (decodes carry one token and reset no slot, see step_inputs.h), so
    // (sequences, rows, KV length) fix every launch and the offsets of the uploaded metadata.
    const bool pure_decode = in.num_seqs > 0 && in.num_decodes == in.num_seqs;
    return Backend::kMemory == MemoryKind::kCuda && graphs_on_ && in.num_seqs <= options_.cuda_graph_max_bs &&
           pure_decode && comm_->graph_capturable();
  }

  void forward_graphed(const StepInputs& in, const std::vector<int32_t>& logit_rows) {
    const StepInputs step = at_graph_kv_len(in, options_.kv_page_size);
    const Meta meta = upload_meta(step, logit_rows);  // the same addresses for every step of a key
    const int64_t rows = static_cast<int64_t>(logit_rows.size());
    place_logits(rows);
    const StepGraphs::Key key{step.num_tokens, rows, step.max_kv_len};
    if (graphs_.replay(key, backend_.stream())) return;
    run_layers(step, meta);
    try {
      graphs_.capture(key, backend_.stream(), [&] { run_layers(step, meta); });
    } catch (const std::exception& e) {  // this step ran; the next ones run eagerly
      spdlog::warn("CUDA graphs turned off: capturing a decode step of {} sequences failed: {}", step.num_seqs,
                   e.what());
      graphs_on_ = false;
      graphs_.clear();
    }
  }

  // Embedding, every layer and the logits of the step's rows (place_logits first).
  void run_layers(const StepInputs& in, const Meta& meta) {
    const int64_t n = in.num_tokens;
    const int64_t H = config_.hidden_size;
    const float eps = static_cast<float>(config_.rms_norm_eps);
    backend_.embedding(meta.token_ids, n, embed_tokens_, dims_.rank * dims_.vocab_rows, dims_.vocab_rows, H, residual_);
    all_reduce(residual_, n * H);
    normed_fp8_ = fp8_rows(normed_rows_, n);  // the mixers' projections read it
    backend_.rms_norm(residual_, layers_[0].input_ln, normed_, n, H, eps, normed_fp8_);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& layer = layers_[i];
      if (layer.type == weights::LayerType::kLinearAttention) {
        gdn_forward(layer, in, meta);
      } else {
        attention_forward(layer, in, meta);
      }
      all_reduce(delta_, n * H);
      normed_fp8_ = fp8_rows(normed_rows_, n);  // gate_up reads it, or the MoE's shared expert
      backend_.add_rms_norm(residual_, delta_, layer.post_ln, normed_, n, H, eps, normed_fp8_);
      mlp_forward(layer, n);
      all_reduce(delta_, n * H);
      const bool last = i + 1 == layers_.size();
      normed_fp8_ = last ? nullptr : fp8_rows(normed_rows_, n);  // the last feeds the BF16 lm_head
      backend_.add_rms_norm(residual_, delta_, last ? final_norm_ : layers_[i + 1].input_ln, normed_, n, H, eps,
                            normed_fp8_);
    }
    compute_logits(meta);
  }

  struct Layer {
    weights::LayerType type;
    int cache_index = 0;  // index among the layers of its type (GDN slot pools / KV pools)
    const T* input_ln = nullptr;
    const T* post_ln = nullptr;
    // GDN
    Linear in_proj;       // fused W_in (without its b/a rows when in_proj_ba is set)
    Linear in_proj_qkvz;  // split form
    Linear in_proj_ba;    // split form; fused form: W_in's BF16 b/a rows beside an FP8 in_proj
    const T* conv1d = nullptr;
    const float* A_log = nullptr;
    const float* dt_bias = nullptr;
    const T* gated_norm = nullptr;
    Linear out_proj;
    // full attention
    Linear q_proj;
    Linear k_proj;
    Linear v_proj;
    const T* q_norm = nullptr;
    const T* k_norm = nullptr;
    Linear o_proj;
    // MLP
    bool moe = false;
    Linear gate_up;
    Linear down;
    kernels::MoeWeights<T> experts;      // BF16 / fp32 experts
    kernels::MoeFp8Weights experts_fp8;  // block-FP8 experts (CUDA); experts_gate_up set when used
  };

  BackendLimits limits() const {
    BackendLimits limits;
    limits.max_tokens = options_.max_tokens;
    if (config_.num_layers_of(weights::LayerType::kLinearAttention) > 0) limits.gdn = gdn_dims_;
    limits.num_q_heads = dims_.q_heads;
    limits.head_dim = config_.head_dim;
    if (config_.is_moe()) {
      limits.moe = kernels::MoeDims{config_.hidden_size, config_.num_experts, config_.num_experts_per_tok,
                                    dims_.moe_intermediate, dims_.shared_intermediate, config_.norm_topk_prob};
    }
    if (config_.fp8.enabled) {
      const int64_t D = config_.head_dim;
      // Every FP8 GEMM's K and N (the MoE shared expert's too), so the GEMM scratch never grows
      // after a CUDA graph captured its address.
      limits.fp8_max_k = std::max({config_.hidden_size, gdn_dims_.value_dim(), dims_.q_heads * D, dims_.intermediate,
                                   dims_.shared_intermediate});
      limits.fp8_max_n = std::max({gdn_dims_.merged_width(), dims_.q_heads * 2 * D, 2 * dims_.intermediate,
                                   2 * dims_.shared_intermediate, config_.hidden_size});
      limits.fp8_numerics = options_.fp8_numerics;
    }
    return limits;
  }

  KvPageGeometry kv_geometry() const {
    return KvPageGeometry{num_attention_layers_, options_.kv_page_size, dims_.kv_heads, config_.head_dim, sizeof(T)};
  }

  // ---- weights ----------------------------------------------------------------------------------

  static bool stays_fp32(const std::string& name) {
    return name.ends_with(".A_log") || name.ends_with(".dt_bias") || name.ends_with("_scale_inv");
  }

  // Converts every rank tensor to the backend's dtype (A_log, dt_bias and FP8 scales stay fp32) and
  // uploads it. Block-FP8 weights (weights/ gives FP8 only to the linears the model runs through
  // linear() or the MoE experts, sharded along whole 128-blocks with their scales) stay E4M3 codes
  // next to their "<name>_scale_inv" where the backend keeps FP8 (CUDA: half the memory of BF16,
  // FP8 GEMMs); the CPU reference dequantizes them here to fp32 (code · scale_inv, exact).
  void load_weights(const weights::Checkpoint* checkpoint, uint64_t seed) {
    const int rank = comm_->rank();
    const int world = comm_->world_size();
    std::vector<weights::HostTensor> host =
        checkpoint != nullptr ? weights::load_rank_weights_host(*checkpoint, rank, world, options_.gdn_projection)
                              : weights::dummy_rank_weights_host(config_, rank, world, options_.gdn_projection, seed);
    std::map<std::string, const weights::HostTensor*> by_name;
    for (const weights::HostTensor& tensor : host) by_name.emplace(tensor.spec.name, &tensor);
    std::vector<float> dequantized;
    std::vector<std::byte> staging;
    for (weights::HostTensor& tensor : host) {
      const weights::TensorSpec& spec = tensor.spec;
      if (spec.name.ends_with("_scale_inv") && !Backend::kKeepsFp8) continue;  // consumed with its weight
      const size_t count = static_cast<size_t>(spec.numel());
      weights::DType source_dtype = spec.dtype;
      const void* source = tensor.data();
      const bool keep_fp8 = spec.dtype == weights::DType::F8_E4M3 && Backend::kKeepsFp8;
      if (spec.dtype == weights::DType::F8_E4M3 && !keep_fp8) {
        auto scale = by_name.find(spec.name + "_scale_inv");
        if (scale == by_name.end()) throw std::runtime_error("FP8 tensor " + spec.name + " has no _scale_inv");
        dequantized.resize(count);
        weights::dequantize_fp8_blocks(tensor, *scale->second, config_.fp8.block_rows, config_.fp8.block_cols,
                                       dequantized.data());
        source_dtype = weights::DType::F32;
        source = dequantized.data();
      }
      const weights::DType target = keep_fp8                ? weights::DType::F8_E4M3
                                    : stays_fp32(spec.name) ? weights::DType::F32
                                                            : Backend::kDType;
      staging.resize(count * weights::dtype_size(target));
      weights::convert_float(source_dtype, source, target, staging.data(), count);  // same dtype: a copy
      Buffer buffer(Backend::kMemory, staging.size());
      copy_to(Backend::kMemory, buffer.data(), staging.data(), staging.size(), backend_.stream());
      synchronize(Backend::kMemory, backend_.stream());
      weight_bytes_ += staging.size();
      weights_.emplace(spec.name, std::move(buffer));
      std::vector<std::byte>().swap(tensor.storage);  // free the host copy as we go
    }
  }

  const Buffer& find_weight(const std::string& name) const {
    auto it = weights_.find(name);
    if (it == weights_.end()) throw std::runtime_error("model: weight " + name + " was not loaded");
    return it->second;
  }
  // Only the backend's dtype: an FP8 weight (its scale loaded) here would be misread as T.
  const T* w(const std::string& name) const {
    if (is_fp8(name))
      throw std::runtime_error("model: weight " + name + " is block-FP8 where the model needs " +
                               std::string(weights::dtype_name(Backend::kDType)));
    return find_weight(name).template as<const T>();
  }
  const float* w32(const std::string& name) const { return find_weight(name).template as<const float>(); }
  bool is_fp8(const std::string& name) const { return weights_.count(name + "_scale_inv") > 0; }
  const uint8_t* codes(const std::string& name) const { return find_weight(name).template as<const uint8_t>(); }
  Linear linear(const std::string& name) const {
    if (!is_fp8(name)) return Linear{w(name)};
    return Linear{nullptr, codes(name), w32(name + "_scale_inv")};
  }

  void bind_layers() {
    embed_tokens_ = w("embed_tokens");
    lm_head_ = config_.tie_word_embeddings ? embed_tokens_ : w("lm_head");
    final_norm_ = w("norm");
    const bool fused = options_.gdn_projection == weights::GdnProjectionForm::kFused;
    for (int i = 0; i < config_.num_hidden_layers; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      Layer layer;
      layer.type = config_.layer_types.at(i);
      layer.input_ln = w(p + "input_layernorm");
      layer.post_ln = w(p + "post_attention_layernorm");
      if (layer.type == weights::LayerType::kLinearAttention) {
        const std::string a = p + "linear_attn.";
        layer.cache_index = num_gdn_layers_++;
        if (fused) {
          layer.in_proj = linear(a + "in_proj");
          // Block-FP8 checkpoints keep in_proj_b/a BF16: W_in's b/a rows then come apart
          // (weights/rank_weights.h), a second GEMM into the same output's b/a columns.
          if (weights_.count(a + "in_proj_ba") > 0) layer.in_proj_ba = linear(a + "in_proj_ba");
        } else {
          layer.in_proj_qkvz = linear(a + "in_proj_qkvz");
          layer.in_proj_ba = linear(a + "in_proj_ba");
        }
        layer.conv1d = w(a + "conv1d");
        layer.A_log = w32(a + "A_log");
        layer.dt_bias = w32(a + "dt_bias");
        layer.gated_norm = w(a + "norm");
        layer.out_proj = linear(a + "out_proj");
      } else {
        const std::string a = p + "self_attn.";
        layer.cache_index = num_attention_layers_++;
        layer.q_proj = linear(a + "q_proj");
        layer.k_proj = linear(a + "k_proj");
        layer.v_proj = linear(a + "v_proj");
        layer.q_norm = w(a + "q_norm");
        layer.k_norm = w(a + "k_norm");
        layer.o_proj = linear(a + "o_proj");
      }
      layer.moe = config_.layer_is_moe(i);
      const std::string m = p + "mlp.";
      if (layer.moe) {
        bind_moe(m, layer);
      } else {
        layer.gate_up = linear(m + "gate_up_proj");
        layer.down = linear(m + "down_proj");
      }
      layers_.push_back(layer);
    }
    if (layers_.empty()) throw std::runtime_error("model: the config has no layers");
  }

  // The MoE runner takes all four expert matrices in one dtype: BF16 (fp32 on CPU), or block-FP8
  // (router and shared_expert_gate BF16 either way; weights/ never quantizes those).
  void bind_moe(const std::string& m, Layer& layer) {
    const bool shared = dims_.shared_intermediate > 0;
    std::vector<std::string> matrices = {m + "experts.gate_up_proj", m + "experts.down_proj"};
    if (shared) matrices.insert(matrices.end(), {m + "shared_expert.gate_up_proj", m + "shared_expert.down_proj"});
    const size_t fp8 = std::count_if(matrices.begin(), matrices.end(), [&](const auto& n) { return is_fp8(n); });
    if (fp8 == 0) {
      layer.experts = {w(m + "gate"),
                       w(matrices[0]),
                       w(matrices[1]),
                       shared ? w(matrices[2]) : nullptr,
                       shared ? w(matrices[3]) : nullptr,
                       shared ? w(m + "shared_expert_gate") : nullptr};
      return;
    }
    if (fp8 != matrices.size()) {
      throw std::runtime_error("model: " + m +
                               " mixes block-FP8 and unquantized expert matrices; the MoE kernels "
                               "take one dtype for all");
    }
    if constexpr (Backend::kKeepsFp8) {
      auto& e = layer.experts_fp8;
      e.router = w(m + "gate");
      e.experts_gate_up = codes(matrices[0]);
      e.experts_gate_up_scale = w32(matrices[0] + "_scale_inv");
      e.experts_down = codes(matrices[1]);
      e.experts_down_scale = w32(matrices[1] + "_scale_inv");
      if (shared) {
        e.shared_gate_up = codes(matrices[2]);
        e.shared_gate_up_scale = w32(matrices[2] + "_scale_inv");
        e.shared_down = codes(matrices[3]);
        e.shared_down_scale = w32(matrices[3] + "_scale_inv");
        e.shared_gate = w(m + "shared_expert_gate");
      }
    }
  }

  // ---- workspace --------------------------------------------------------------------------------

  T* carve(int64_t elements) { return reinterpret_cast<T*>(carve_bytes(elements * sizeof(T))); }
  std::byte* carve_bytes(size_t bytes) {
    std::byte* p = workspace_.as<std::byte>() + carve_offset_;
    carve_offset_ += (bytes + 255) / 256 * 256;
    return p;
  }

  // Widths (elements per token) of the buffers the layers share; each sized for the widest user.
  struct Widths {
    int64_t proj = 0, split = 0, a = 0, b = 0, c = 0, gates = 0;
  };
  Widths widths() const {
    const int64_t D = config_.head_dim;
    const int64_t attn_proj = dims_.q_heads * 2 * D + 2 * dims_.kv_heads * D;
    int64_t dense_intermediate = 0;
    for (const Layer& layer : layers_) {
      if (!layer.moe) dense_intermediate = std::max(dense_intermediate, dims_.intermediate);
    }
    Widths wd;
    wd.proj = std::max({gdn_dims_.merged_width(), attn_proj, 2 * dense_intermediate});
    if (options_.gdn_projection == weights::GdnProjectionForm::kSplit) wd.split = gdn_dims_.merged_width();
    wd.a = std::max({gdn_dims_.conv_dim(), dims_.q_heads * D + dims_.kv_heads * D, dense_intermediate});
    wd.b = std::max(gdn_dims_.value_dim(), dims_.q_heads * D);
    wd.c = gdn_dims_.value_dim();
    wd.gates = 2 * gdn_dims_.num_v_heads;
    return wd;
  }

  void allocate_workspace() {
    const int64_t n = options_.max_tokens;
    const int64_t H = config_.hidden_size;
    const Widths wd = widths();
    const int64_t elements = n * (3 * H + wd.proj + wd.split + wd.a + wd.b + wd.c);
    workspace_bytes_ = static_cast<uint64_t>(elements) * sizeof(T) + n * wd.gates * sizeof(float) + 16 * 256 +
                       fp8_rows_bytes(fp8_rows_k(H)) + fp8_rows_bytes(fp8_rows_k(dims_.intermediate)) +
                       fp8_rows_bytes(fp8_rows_k(gdn_dims_.value_dim()));
    workspace_ = Buffer(Backend::kMemory, workspace_bytes_);
    residual_ = carve(n * H);
    normed_ = carve(n * H);
    delta_ = carve(n * H);
    proj_ = carve(n * wd.proj);
    split_ = carve(n * wd.split);
    buf_a_ = carve(n * wd.a);
    buf_b_ = carve(n * wd.b);
    buf_c_ = carve(n * wd.c);
    gates_ = reinterpret_cast<float*>(carve_bytes(n * wd.gates * sizeof(float)));
    normed_rows_ = carve_fp8_rows(fp8_rows_k(H));
    act_rows_ = carve_fp8_rows(fp8_rows_k(dims_.intermediate));
    core_rows_ = carve_fp8_rows(fp8_rows_k(gdn_dims_.value_dim()));
    workspace_bytes_ += backend_.workspace_bytes();
  }

  // ---- FP8 activation rows ----------------------------------------------------------------------
  // With block-FP8 weights kept as FP8 and W8A8 numerics, the norms, SiLU-mul and the fused GDN
  // decode also write their output quantized per token and 128-group (kernels::Fp8Rows), and the
  // FP8 linears that read it pass it on: their W8A8 skinny kernel then skips its own quantize
  // launch (2-3 µs per GEMM on the H100). Only for steps of up to kernels::kFp8RowsMaxTokens tokens;
  // larger steps' GEMMs quantize for themselves.

  // K of rows worth quantizing for the FP8 linears (0: none, e.g. BF16 weights or W8A16 numerics).
  int64_t fp8_rows_k(int64_t k) const {
    const bool w8a8 =
        Backend::kKeepsFp8 && config_.fp8.enabled && options_.fp8_numerics != kernels::cuda::Fp8Numerics::kW8A16;
    return w8a8 && k > 0 && k % kernels::kFp8BlockSize == 0 ? k : 0;
  }
  // Bytes of the codes and of the scales of kFp8RowsMaxTokens rows of K = k.
  static uint64_t fp8_codes_bytes(int64_t k) { return kernels::kFp8RowsMaxTokens * k; }
  static uint64_t fp8_scales_bytes(int64_t k) { return fp8_codes_bytes(k) / kernels::kFp8BlockSize * sizeof(float); }
  static uint64_t fp8_rows_bytes(int64_t k) {  // as carve_fp8_rows carves them
    const auto carved = [](uint64_t bytes) { return (bytes + 255) / 256 * 256; };
    return carved(fp8_codes_bytes(k)) + carved(fp8_scales_bytes(k));
  }
  kernels::Fp8Rows carve_fp8_rows(int64_t k) {
    if (k == 0) return {};
    return {reinterpret_cast<uint8_t*>(carve_bytes(fp8_codes_bytes(k))),
            reinterpret_cast<float*>(carve_bytes(fp8_scales_bytes(k)))};
  }
  // `rows` for a step of n tokens, or null where it has none or the step is too large.
  static const kernels::Fp8Rows* fp8_rows(const kernels::Fp8Rows& rows, int64_t n) {
    return rows.codes != nullptr && n <= kernels::kFp8RowsMaxTokens ? &rows : nullptr;
  }

  // ---- step metadata ----------------------------------------------------------------------------

  Meta upload_meta(const StepInputs& in, const std::vector<int32_t>& logit_rows) {
    std::vector<int32_t> packed;
    std::vector<size_t> offsets;
    for (const std::vector<int32_t>* part : {&in.token_ids, &in.positions, &in.cu_seqlens, &in.prefill_cu_seqlens,
                                             &in.gdn_slots, &in.context_lens, &in.page_table, &logit_rows}) {
      offsets.push_back(packed.size());
      packed.insert(packed.end(), part->begin(), part->end());
      packed.resize((packed.size() + 63) / 64 * 64);  // keep every array 256-byte aligned
    }
    const size_t bytes = packed.size() * sizeof(int32_t);
    if (meta_.bytes() < bytes) {
      graphs_.clear();  // they read the old buffer
      meta_ = Buffer(Backend::kMemory, bytes * 2);
    }
    copy_to(Backend::kMemory, meta_.data(), packed.data(), bytes, backend_.stream());
    const int32_t* base = meta_.as<const int32_t>();
    return Meta{base + offsets[0], base + offsets[1], base + offsets[2], base + offsets[3],
                base + offsets[4], base + offsets[5], base + offsets[6], base + offsets[7]};
  }

  // ---- layers -----------------------------------------------------------------------------------

  void all_reduce(T* data, int64_t count) {
    comm_->all_reduce_sum(data, static_cast<size_t>(count), Backend::kCommDType, backend_.stream());
  }

  // Gated DeltaNet: projection (one GEMM with views — two when an FP8 W_in keeps its b/a rows BF16 —
  // or two GEMMs + split), then the decode rows through the fused decode kernel and the prefill
  // rows through conv → gating → chunked rule → gated norm, then out_proj.
  void gdn_forward(const Layer& layer, const StepInputs& in, const Meta& meta) {
    const kernels::GdnDims& d = gdn_dims_;
    const int64_t n = in.num_tokens;
    const int64_t H = config_.hidden_size;
    const float eps = static_cast<float>(config_.rms_norm_eps);
    struct View {
      const T* p;
      int64_t ld;
    } mixed, z, b, a;
    if (options_.gdn_projection == weights::GdnProjectionForm::kFused) {
      const int64_t mw = d.merged_width();
      const bool ba_apart = layer.in_proj_ba.w != nullptr || layer.in_proj_ba.fp8 != nullptr;
      backend_.linear(normed_, H, layer.in_proj, proj_, mw, n, ba_apart ? d.b_offset() : mw, H, normed_fp8_);
      if (ba_apart) backend_.linear(normed_, H, layer.in_proj_ba, proj_ + d.b_offset(), mw, n, 2 * d.num_v_heads, H);
      mixed = {proj_, mw};
      z = {proj_ + d.z_offset(), mw};
      b = {proj_ + d.b_offset(), mw};
      a = {proj_ + d.a_offset(), mw};
    } else {
      const int64_t qkvz_width = d.conv_dim() + d.value_dim();
      T* ba = proj_ + n * qkvz_width;
      backend_.linear(normed_, H, layer.in_proj_qkvz, proj_, qkvz_width, n, qkvz_width, H, normed_fp8_);
      backend_.linear(normed_, H, layer.in_proj_ba, ba, 2 * d.num_v_heads, n, 2 * d.num_v_heads, H);
      T* s_mixed = split_;
      T* s_z = s_mixed + n * d.conv_dim();
      T* s_b = s_z + n * d.value_dim();
      T* s_a = s_b + n * d.num_v_heads;
      const auto layout = config_.gdn_layout == weights::GdnCheckpointLayout::kInterleaved
                              ? kernels::QkvzLayout::kInterleavedGroups
                              : kernels::QkvzLayout::kContiguous;
      backend_.gdn_split(proj_, ba, n, d, layout, s_mixed, s_z, s_b, s_a);
      mixed = {s_mixed, d.conv_dim()};
      z = {s_z, d.value_dim()};
      b = {s_b, d.num_v_heads};
      a = {s_a, d.num_v_heads};
    }
    float* conv_pool = gdn_pool_->conv(layer.cache_index);
    float* state_pool = gdn_pool_->recurrent(layer.cache_index);
    T* core_normed = buf_c_;  // [n, V]: gated-norm output, out_proj's input
    const int64_t decodes = in.num_decodes;
    const int64_t prefill_rows = n - decodes;
    // A decode-only step's fused decode also writes its output quantized, for a W8A8 out_proj.
    const kernels::Fp8Rows* core_fp8 = prefill_rows == 0 ? fp8_rows(core_rows_, n) : nullptr;
    if (decodes > 0) {
      kernels::GdnDecodeInputs<T> inputs;
      inputs.mixed_qkv = mixed.p;
      inputs.mixed_qkv_stride = mixed.ld;
      inputs.z = z.p;
      inputs.z_stride = z.ld;
      inputs.b = b.p;
      inputs.b_stride = b.ld;
      inputs.a = a.p;
      inputs.a_stride = a.ld;
      inputs.conv_weight = layer.conv1d;
      inputs.A_log = layer.A_log;
      inputs.dt_bias = layer.dt_bias;
      inputs.norm_weight = layer.gated_norm;
      inputs.norm_eps = eps;
      backend_.gdn_decode(inputs, kernels::GdnDecodeState{conv_pool, state_pool, meta.gdn_slots}, decodes, d,
                          core_normed, core_fp8);
    }
    if (prefill_rows > 0) {
      const kernels::GdnVarlenBatch batch{meta.prefill_cu_seqlens, meta.gdn_slots + in.num_decodes, nullptr,
                                          in.num_seqs - in.num_decodes, prefill_rows, in.max_q_len};
      T* conv_out = buf_a_;  // [P, C]
      T* core = buf_b_;      // [P, V]
      float* g = gates_;
      float* beta = gates_ + prefill_rows * d.num_v_heads;
      backend_.gdn_conv_prefill(mixed.p + decodes * mixed.ld, mixed.ld, layer.conv1d, d.conv_dim(), conv_pool, batch,
                                conv_out);
      backend_.gdn_gating(a.p + decodes * a.ld, a.ld, b.p + decodes * b.ld, b.ld, layer.A_log, layer.dt_bias,
                          prefill_rows, d.num_v_heads, g, beta);
      backend_.gated_delta_rule_prefill(conv_out, d.conv_dim(), g, beta, state_pool, batch, d, core);
      backend_.gated_rms_norm(core, z.p + decodes * z.ld, z.ld, layer.gated_norm, prefill_rows, d.num_v_heads,
                              d.head_v_dim, eps, core_normed + decodes * d.value_dim());
    }
    backend_.linear(core_normed, d.value_dim(), layer.out_proj, delta_, H, n, H, d.value_dim(), core_fp8);
  }

  // Gated full attention: q_proj (heads [q_h; gate_h]), k_proj and v_proj into one buffer; q/k
  // norm + RoPE; K/V written to the pages; paged attention × sigmoid(gate); o_proj.
  void attention_forward(const Layer& layer, const StepInputs& in, const Meta& meta) {
    const int64_t n = in.num_tokens;
    const int64_t H = config_.hidden_size;
    const int64_t D = config_.head_dim;
    const int64_t hq = dims_.q_heads;
    const int64_t hkv = dims_.kv_heads;
    const int64_t width = hq * 2 * D + 2 * hkv * D;
    T* qg = proj_;
    T* k = proj_ + hq * 2 * D;
    T* v = k + hkv * D;
    backend_.linear(normed_, H, layer.q_proj, qg, width, n, hq * 2 * D, H, normed_fp8_);
    backend_.linear(normed_, H, layer.k_proj, k, width, n, hkv * D, H, normed_fp8_);
    backend_.linear(normed_, H, layer.v_proj, v, width, n, hkv * D, H, normed_fp8_);
    T* q_out = buf_a_;
    T* k_out = buf_a_ + n * hq * D;
    const kernels::RopeParams rope{D, config_.rotary_dim(), static_cast<float>(config_.rope_theta)};
    backend_.qk_norm_rope(qg, width, k, width, layer.q_norm, layer.k_norm, static_cast<float>(config_.rms_norm_eps),
                          meta.positions, n, hq, hkv, rope, q_out, k_out);
    const kernels::AttentionBatch batch{meta.cu_seqlens, meta.context_lens, meta.page_table, in.max_pages_per_seq,
                                        in.num_seqs, n, in.max_q_len, in.max_kv_len};
    const kernels::PagedKvCache<T> cache{static_cast<T*>(kv_pool_->k(layer.cache_index)),
                                         static_cast<T*>(kv_pool_->v(layer.cache_index)), kv_pool_->num_pages(),
                                         options_.kv_page_size, hkv, D};
    backend_.write_kv(k_out, hkv * D, v, width, batch, cache);
    T* attn_out = buf_b_;
    kernels::AttentionIo<T> io;
    io.q = q_out;
    io.gate = qg + D;
    io.gate_row_stride = width;
    io.gate_head_stride = 2 * D;
    io.out = attn_out;
    io.out_row_stride = hq * D;
    io.num_q_heads = hq;
    io.scale = 1.f / std::sqrt(static_cast<float>(D));
    backend_.attention(io, batch, cache);
    backend_.linear(attn_out, hq * D, layer.o_proj, delta_, H, n, H, hq * D);
  }

  void mlp_forward(const Layer& layer, int64_t n) {
    const int64_t H = config_.hidden_size;
    if (layer.moe) {
      if constexpr (Backend::kKeepsFp8) {
        if (layer.experts_fp8.experts_gate_up != nullptr) {
          backend_.moe(normed_, n, layer.experts_fp8, delta_, normed_fp8_);
          return;
        }
      }
      backend_.moe(normed_, n, layer.experts, delta_);
      return;
    }
    const int64_t I = dims_.intermediate;
    backend_.linear(normed_, H, layer.gate_up, proj_, 2 * I, n, 2 * I, H, normed_fp8_);
    const kernels::Fp8Rows* act_fp8 = fp8_rows(act_rows_, n);
    backend_.silu_and_mul(proj_, buf_a_, n, I, act_fp8);
    backend_.linear(buf_a_, I, layer.down, delta_, H, n, H, I, act_fp8);
  }

  // Sizes the logits buffer for `rows` rows and points logits_ into it.
  void place_logits(int64_t rows) {
    const int64_t H = config_.hidden_size;
    const int64_t vr = dims_.vocab_rows;
    const int64_t world = comm_->world_size();
    logit_rows_ = rows;
    if (rows == 0) return;
    const size_t need = static_cast<size_t>(rows) * (H * sizeof(T) + (2 * world + 1) * vr * sizeof(float)) + 1024;
    if (logits_buffer_.bytes() < need) {
      graphs_.clear();  // they write the old buffer
      logits_buffer_ = Buffer(Backend::kMemory, need);
    }
    logits_ = logits_buffer_.as<float>() + (logits_local_offset(rows) + (1 + world) * rows * vr);
  }
  // Where, in floats from the buffer's start, the rank's [rows][Vp_r] slice goes: after the gathered
  // lm_head input rows, 256-byte aligned.
  int64_t logits_local_offset(int64_t rows) const {
    return static_cast<int64_t>((rows * config_.hidden_size * sizeof(T) + 255) / 256 * 256 / sizeof(float));
  }

  // lm_head over the requested rows: each rank's vocab slice [rows][Vp_r], all-gathered into
  // [rank][rows][Vp_r], then laid out as logits_ [rows][Vp] (global id = rank·Vp_r + column).
  void compute_logits(const Meta& meta) {
    const int64_t H = config_.hidden_size;
    const int64_t vr = dims_.vocab_rows;
    const int64_t world = comm_->world_size();
    const int64_t rows = logit_rows_;
    if (rows == 0) return;
    T* lm_head_in = logits_buffer_.as<T>();
    float* local = logits_buffer_.as<float>() + logits_local_offset(rows);
    float* gathered = local + rows * vr;
    backend_.gather_rows(normed_, H, meta.logit_rows, rows, H, lm_head_in);
    backend_.gemm_f32(lm_head_in, H, lm_head_, local, vr, rows, vr, H);
    comm_->all_gather(local, gathered, static_cast<size_t>(rows * vr), CommDType::kFloat32, backend_.stream());
    for (int64_t rank = 0; rank < world; ++rank) {
      copy_2d(Backend::kMemory, logits_ + rank * vr, world * vr * sizeof(float), gathered + rank * rows * vr,
              vr * sizeof(float), vr * sizeof(float), rows, backend_.stream());
    }
  }

 public:
  void sample(const std::vector<kernels::SamplingParams>& params, std::vector<int32_t>& tokens,
              std::vector<float>& logprobs) override {
    if (static_cast<int64_t>(params.size()) != logit_rows_) {
      throw std::invalid_argument("sample: " + std::to_string(params.size()) + " sampling params for " +
                                  std::to_string(logit_rows_) + " logits rows");
    }
    tokens.assign(params.size(), 0);
    logprobs.assign(params.size(), 0.f);
    if (logit_rows_ == 0) return;
    backend_.sample(logits_, dims_.vocab_padded, logit_rows_, config_.vocab_size, params.data(), tokens.data(),
                    logprobs.data());
  }

  void copy_logits(std::vector<float>& logits) const override {
    const int64_t vocab = config_.vocab_size;
    logits.assign(static_cast<size_t>(logit_rows_ * vocab), 0.f);
    if (logit_rows_ == 0) return;
    std::vector<float> padded(static_cast<size_t>(logit_rows_ * dims_.vocab_padded));
    copy_from(Backend::kMemory, padded.data(), logits_, padded.size() * sizeof(float), backend_.stream());
    synchronize(Backend::kMemory, backend_.stream());
    for (int64_t r = 0; r < logit_rows_; ++r) {
      std::memcpy(logits.data() + r * vocab, padded.data() + r * dims_.vocab_padded, vocab * sizeof(float));
    }
  }

 private:
  ModelOptions options_;
  weights::ModelConfig config_;
  Communicator* comm_;
  weights::RankDims dims_;
  kernels::GdnDims gdn_dims_;
  mutable Backend backend_;

  std::map<std::string, Buffer> weights_;
  uint64_t weight_bytes_ = 0;
  std::vector<Layer> layers_;
  const T* embed_tokens_ = nullptr;
  const T* lm_head_ = nullptr;
  const T* final_norm_ = nullptr;
  int num_gdn_layers_ = 0;
  int num_attention_layers_ = 0;

  Buffer workspace_;
  uint64_t workspace_bytes_ = 0;
  size_t carve_offset_ = 0;
  T* residual_ = nullptr;
  T* normed_ = nullptr;
  T* delta_ = nullptr;
  T* proj_ = nullptr;
  T* split_ = nullptr;
  T* buf_a_ = nullptr;
  T* buf_b_ = nullptr;
  T* buf_c_ = nullptr;
  float* gates_ = nullptr;
  kernels::Fp8Rows normed_rows_;                  // normed_ quantized (see fp8_rows_k), and
  const kernels::Fp8Rows* normed_fp8_ = nullptr;  // it where the last norm into normed_ wrote it
  kernels::Fp8Rows act_rows_;                     // the SiLU-mul output quantized
  kernels::Fp8Rows core_rows_;                    // the GDN decode output quantized
  Buffer meta_;
  Buffer logits_buffer_;
  float* logits_ = nullptr;  // [logit_rows_][Vp] fp32, where the backend computes
  int64_t logit_rows_ = 0;

  std::unique_ptr<KvPagePool> kv_pool_;
  std::unique_ptr<GdnStatePool> gdn_pool_;
  StepGraphs graphs_{kMaxGraphs};
  bool graphs_on_ = options_.cuda_graph_max_bs > 0;
};

}  // namespace ds::worker
