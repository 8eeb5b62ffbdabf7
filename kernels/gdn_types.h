// Shapes and batch descriptions shared by the Gated DeltaNet (GDN) kernels: gdn_projection.h,
// gdn_conv.h, gdn_gating.h, gated_delta_rule.h, gated_norm.h and gdn_decode.h.
//
// Everything is per tensor-parallel rank: the caller passes the rank's head counts.
#pragma once

#include <cstdint>

namespace ds::kernels {

// Width of the causal depthwise conv of every published Qwen3.5 / Qwen3-Next model; the conv
// state of a slot keeps the last kGdnConvKernel - 1 inputs of each channel.
inline constexpr int64_t kGdnConvKernel = 4;
inline constexpr int64_t kGdnConvStateLen = kGdnConvKernel - 1;

// Head geometry of one GDN layer on one rank. Value head h reads key head h / ratio().
struct GdnDims {
  int64_t num_k_heads = 0;  // Hk: query/key heads on this rank
  int64_t num_v_heads = 0;  // Hv: value heads on this rank, a multiple of Hk
  int64_t head_k_dim = 0;   // dk (128 in every published model)
  int64_t head_v_dim = 0;   // dv (128 in every published model)

  int64_t ratio() const { return num_v_heads / num_k_heads; }       // r = Hv / Hk (1, 2, 3, 4, 8)
  int64_t key_dim() const { return num_k_heads * head_k_dim; }      // K = Hk·dk
  int64_t value_dim() const { return num_v_heads * head_v_dim; }    // V = Hv·dv
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }  // C = 2K + V: q|k|v channels

  // Column layout of the merged projection output [T, merged_width()] = x·W_inᵀ with
  // W_in = [q; k; v; z; b; a] (DESIGN.md §3). Each part is a row-strided view with row stride
  // merged_width(): mixed_qkv = cols [0, C), z = [C, C+V), b = [C+V, C+V+Hv), a = the last Hv.
  int64_t z_offset() const { return conv_dim(); }
  int64_t b_offset() const { return conv_dim() + value_dim(); }
  int64_t a_offset() const { return conv_dim() + value_dim() + num_v_heads; }
  int64_t merged_width() const { return conv_dim() + value_dim() + 2 * num_v_heads; }

  // Floats of one slot's recurrent state for this layer: [Hv][dv][dk].
  int64_t state_floats() const { return num_v_heads * head_v_dim * head_k_dim; }
  // Floats of one slot's conv state for this layer: [C][kGdnConvStateLen].
  int64_t conv_state_floats() const { return conv_dim() * kGdnConvStateLen; }
};

// Throws std::invalid_argument naming `what` and the offending field when the geometry is not
// usable (non-positive sizes, Hv not a multiple of Hk).
void validate_gdn_dims(const GdnDims& dims, const char* what);

// A variable-length batch of packed tokens (prefill; decode is the case of one token each).
// All pointers live where the op runs: host memory for ds::kernels::cpu, device memory for
// ds::kernels::cuda.
struct GdnVarlenBatch {
  // int32 [num_seqs + 1], cu_seqlens[0] = 0, non-decreasing, cu_seqlens[num_seqs] = num_tokens.
  // Sequence s owns packed tokens [cu_seqlens[s], cu_seqlens[s+1]); empty sequences are allowed.
  const int32_t* cu_seqlens = nullptr;
  // int32 [num_seqs]: the GDN state slot of each sequence, an index into the layer's conv and
  // recurrent state pools (distinct per sequence within one call).
  const int32_t* slots = nullptr;
  // uint8 [num_seqs] or nullptr. 0: the sequence starts from zero state (the slot's contents are
  // ignored, then overwritten with the final state); non-zero: it continues from the slot's state.
  // nullptr means every sequence continues from its slot (new sequences have zeroed slots).
  const uint8_t* has_initial_state = nullptr;
  int64_t num_seqs = 0;
  int64_t num_tokens = 0;
  // Tokens of the longest sequence, when the caller knows it (0: unknown, bounded by num_tokens).
  // Lets the CUDA prefill pick the per-token recurrence for batches of short prompts.
  int64_t max_seq_len = 0;
};

}  // namespace ds::kernels
