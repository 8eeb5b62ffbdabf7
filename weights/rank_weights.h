// The per-rank tensor contract between weights/ and the model: which tensors rank r of `world`
// holds, their names, dtypes and shapes, and the loader that fills them from a checkpoint or with
// dummy values. All matrices are row-major [out, in] as in the checkpoint (y = x · Wᵀ).
//
// Per-rank counts (see RankDims): Hq_r, Hkv_r, Hk_r, Hv_r, I_r, Ie_r, Is_r; D = head_dim,
// dk/dv = linear key/value head dims, K_r = Hk_r·dk, V_r = Hv_r·dv, C_r = 2K_r + V_r,
// Vp_r = padded vocab / world. Names (no ".weight" suffix):
//   embed_tokens [Vp_r, H]       vocab-parallel rows; rows past the real vocab are zero
//   lm_head [Vp_r, H]            only when not tied (tied: the model uses embed_tokens)
//   norm [H]
//   layers.{i}.input_layernorm [H], layers.{i}.post_attention_layernorm [H]       (1+w) RMSNorms
//   GDN layer, prefix layers.{i}.linear_attn.:
//     in_proj [C_r + V_r + 2Hv_r, H]  (fused form) rows [q_r; k_r; v_r; z_r; b_r; a_r]; FP8 checkpoints
//        with unquantized in_proj_b/a (all published ones): in_proj [C_r + V_r, H] F8_E4M3 rows
//        [q_r; k_r; v_r; z_r] and in_proj_ba [2Hv_r, H] BF16 rows [b_r; a_r] (any GDN layout)
//     in_proj_qkvz [C_r + V_r, H], in_proj_ba [2Hv_r, H]  (split form) in the checkpoint's own
//        layout (config.gdn_layout): kSeparate -> [q_r|k_r|v_r|z_r], [b_r|a_r];
//        kInterleaved -> per local key head g: [q_g|k_g|v_g(Hv/Hk·dv)|z_g(Hv/Hk·dv)], [b_g|a_g]
//     conv1d [C_r, kernel] (channels q_r|k_r|v_r), A_log [Hv_r] F32, dt_bias [Hv_r] F32,
//     norm [dv] (plain weight, gated RMSNorm), out_proj [H, V_r]
//   full-attention layer, prefix layers.{i}.self_attn.:
//     q_proj [Hq_r·2D, H] (per head [q_h; gate_h]), k_proj [Hkv_r·D, H], v_proj [Hkv_r·D, H]
//     (KV heads replicated when world > num_key_value_heads), q_norm [D], k_norm [D], o_proj [H, Hq_r·D]
//   dense MLP: layers.{i}.mlp.gate_up_proj [2I_r, H] (rows [gate_r; up_r]), layers.{i}.mlp.down_proj [H, I_r]
//   MoE layer, prefix layers.{i}.mlp.:
//     gate [E, H] (router, replicated), experts.gate_up_proj [E, 2Ie_r, H] (per expert [gate; up]),
//     experts.down_proj [E, H, Ie_r], and with a shared expert: shared_expert.gate_up_proj [2Is_r, H],
//     shared_expert.down_proj [H, Is_r], shared_expert_gate [1, H]
// Dtypes: config.dtype (the checkpoint's, normally BF16) except A_log and dt_bias (F32). With FP8
// (config.fp8.enabled) every quantized linear weight is F8_E4M3 with a sibling "<name>_scale_inv"
// F32 [ceil(rows/128), ceil(cols/128)] (3-D experts: [E, ceil(rows/128), ceil(cols/128)]); scale
// blocks start at row/col 0 of the rank's tensor. A fused W_in whose b/a rows are FP8 in the
// checkpoint requantizes them at load into scale blocks of their own (C_r + V_r is a multiple of 128).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "weights/checkpoint.h"
#include "weights/dtype.h"
#include "weights/model_config.h"

namespace ds::weights {

enum class GdnProjectionForm { kFused, kSplit };
GdnProjectionForm parse_gdn_projection_form(const std::string& name);  // "fused" | "split"

struct TensorSpec {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  int64_t numel() const;
  size_t nbytes() const;
};

// Every tensor rank `rank` of `world` needs, in a fixed order (layer by layer).
std::vector<TensorSpec> rank_tensor_specs(const ModelConfig& config, int rank, int world, GdnProjectionForm form);

// Called once per spec, in rank_tensor_specs order, from the calling thread; returns where to
// write spec.nbytes() bytes (host or pinned memory the caller owns).
using DestinationFn = std::function<void*(const TensorSpec&)>;

// Fills every rank tensor from the checkpoint: slices are copied straight from the mapped files
// into the destinations (row blocks by memcpy; a dtype conversion only where the stored dtype
// differs from the spec), and mapped pages are dropped as tensors finish. Throws naming the tensor
// for a missing or misshapen checkpoint tensor, and naming every checkpoint tensor the model does
// not use.
void load_rank_weights(const Checkpoint& checkpoint, int rank, int world, GdnProjectionForm form,
                       const DestinationFn& destination);

// Random values of realistic scale, deterministic in (seed, spec.name) so that replicated tensors
// agree across ranks: (1+w) RMSNorm weights ~ N(0, 0.02) (near identity); the GDN gated norm
// (plain weight) ~ 1 + N(0, 0.02); A_log = log(U[1,16]); dt_bias ~ N(0, 0.1); conv1d ~
// N(0, 1/sqrt(kernel)); linear weights and experts ~ N(0, 1/sqrt(in)); embeddings and lm_head
// ~ N(0, 0.02); FP8 weights with their "_scale_inv" encode the same distribution (the weight's
// spec name picks the scale). `dst` holds spec.nbytes() bytes.
void fill_dummy(const TensorSpec& spec, uint64_t seed, void* dst);
// fill_dummy over rank_tensor_specs, like load_rank_weights (padded vocab rows are zeroed).
void fill_dummy_rank_weights(const ModelConfig& config, int rank, int world, GdnProjectionForm form, uint64_t seed,
                             const DestinationFn& destination);

// Owning host copy of a rank's tensors (tests, the CPU backend).
struct HostTensor {
  TensorSpec spec;
  std::vector<std::byte> storage;
  const std::byte* data() const { return storage.data(); }
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(storage.data()); }
};
std::vector<HostTensor> load_rank_weights_host(const Checkpoint& checkpoint, int rank, int world,
                                               GdnProjectionForm form);
std::vector<HostTensor> dummy_rank_weights_host(const ModelConfig& config, int rank, int world,
                                                GdnProjectionForm form, uint64_t seed);

// FP8 block dequantization for the CPU backend: weight [rows, cols] F8_E4M3 (or [E, rows, cols])
// times scale_inv [ceil(rows/br), ceil(cols/bc)] F32 -> fp32 of the same shape.
void dequantize_fp8_blocks(const HostTensor& weight, const HostTensor& scale_inv, int block_rows, int block_cols,
                           float* dst);

}  // namespace ds::weights
