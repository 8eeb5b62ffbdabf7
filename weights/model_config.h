// The model's hyper-parameters, read from a Hugging Face config.json (composite Qwen3.5 configs
// with text_config, flat qwen3_5_text / qwen3_5_moe_text, qwen3_next) or taken from a preset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "weights/dtype.h"

namespace ds::weights {

enum class LayerType { kLinearAttention, kFullAttention };  // Gated DeltaNet | gated full attention

// How the checkpoint stores the GDN input projection (DESIGN.md §3).
enum class GdnCheckpointLayout {
  kSeparate,     // Qwen3.5: in_proj_qkv (rows q|k|v), in_proj_z, in_proj_b, in_proj_a
  kInterleaved,  // Qwen3-Next: in_proj_qkvz / in_proj_ba interleaved per key-head group
};

// Block-wise FP8 (E4M3) quantization as in quantization_config {"quant_method": "fp8", ...}.
struct Fp8Config {
  bool enabled = false;
  int block_rows = 128;  // weight_block_size[0]: output rows per scale
  int block_cols = 128;  // weight_block_size[1]: input columns per scale
  // Module names (as in config.json, prefixes like "model.language_model." kept) left in BF16.
  std::vector<std::string> modules_to_not_convert;
};

struct ModelConfig {
  std::string model_type;  // as in config.json: qwen3_5, qwen3_5_moe, qwen3_5_text, qwen3_5_moe_text, qwen3_next
  GdnCheckpointLayout gdn_layout = GdnCheckpointLayout::kSeparate;  // qwen3_next: kInterleaved

  int64_t hidden_size = 0;
  int num_hidden_layers = 0;
  int64_t vocab_size = 0;
  std::vector<LayerType> layer_types;  // one per layer
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::vector<int64_t> eos_token_ids;
  DType dtype = DType::BF16;  // dtype / torch_dtype: the dtype of the unquantized weights

  // Gated full attention.
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  bool attn_output_gate = true;        // q_proj rows interleave [q_h; gate_h] per head
  double partial_rotary_factor = 0.25;  // rotary_dim = head_dim * partial_rotary_factor (NeoX style)
  double rope_theta = 10000000.0;
  int64_t max_position_embeddings = 0;

  // Gated DeltaNet.
  int linear_num_key_heads = 0;
  int linear_num_value_heads = 0;
  int linear_key_head_dim = 0;
  int linear_value_head_dim = 0;
  int linear_conv_kernel_dim = 4;

  // MLP: dense when num_experts == 0.
  int64_t intermediate_size = 0;
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool norm_topk_prob = true;
  int decoder_sparse_step = 1;       // MoE models: layer i is sparse when (i+1) % step == 0 ...
  std::vector<int> mlp_only_layers;  // ... and i is not listed here (then it is a dense MLP of intermediate_size)

  Fp8Config fp8;

  bool is_moe() const { return num_experts > 0; }
  bool layer_is_moe(int layer) const;
  int rotary_dim() const;                  // head_dim * partial_rotary_factor
  int num_layers_of(LayerType type) const;
};

// Reads config.json; throws std::runtime_error naming the file and the field for anything
// missing, inconsistent or unsupported (never guesses).
ModelConfig parse_model_config(const std::string& config_json_path);
ModelConfig parse_model_config_text(const std::string& json_text, const std::string& source_name);

// Marks `config` block-FP8 (128×128 E4M3) the way the published -FP8 checkpoints are: every linear
// weight but lm_head, the GDN b/a projections and the MoE router and shared-expert gates. The
// module names in modules_to_not_convert start with `prefix` (as in such a config.json:
// "model.language_model." or "model."; "" for canonical names).
void quantize_like_published_fp8(ModelConfig& config, const std::string& prefix);

// Published configurations: qwen3.5-0.8b, qwen3.5-2b, qwen3.5-4b, qwen3.5-9b, qwen3.5-27b,
// qwen3.5-35b-a3b, qwen3.5-122b-a10b, qwen3.5-397b-a17b, qwen3-next-80b-a3b, and tiny (the
// embedded default); any of them with "-fp8" appended is its block-FP8 form
// (quantize_like_published_fp8). Throws std::invalid_argument listing the names for an unknown one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();  // the BF16 names

// Per-rank sizes under tensor parallelism over `world` ranks. Throws std::invalid_argument
// naming the head count (or size) that `world` does not divide.
struct RankDims {
  int world = 1, rank = 0;
  int64_t vocab_padded = 0;    // Vp: vocab rounded up to a multiple of 64 * world
  int64_t vocab_rows = 0;      // Vp_r = Vp / world; rank r owns rows [r*Vp_r, (r+1)*Vp_r)
  int q_heads = 0;             // Hq_r
  int kv_heads = 0;            // Hkv_r (1 when world > num_key_value_heads: replicated)
  int first_kv_head = 0;       // global index of this rank's first KV head
  int key_heads = 0;           // Hk_r (GDN)
  int value_heads = 0;         // Hv_r (GDN)
  int64_t key_dim = 0;         // K_r = Hk_r * dk
  int64_t value_dim = 0;       // V_r = Hv_r * dv
  int64_t conv_dim = 0;        // C_r = 2 K_r + V_r
  int64_t in_proj_rows = 0;    // C_r + V_r + 2 Hv_r (fused W_in rows)
  int64_t intermediate = 0;    // I_r (dense MLP layers)
  int64_t moe_intermediate = 0;     // Ie_r
  int64_t shared_intermediate = 0;  // Is_r
};
RankDims rank_dims(const ModelConfig& config, int rank, int world);

}  // namespace ds::weights
