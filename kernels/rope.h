// Rotary position embedding, NeoX style (rotate_half), partial: only the first rotary_dim of each
// head's head_dim channels rotate, the rest pass through. As in transformers' Qwen3Next
// apply_rotary_pos_emb with partial_rotary_factor (Qwen3.5's mRoPE reduces to this for text).
//
//   inv_freq[j] = theta^(-2j / rotary_dim),  angle = position · inv_freq[j],  j < rotary_dim/2
//   out[j]              = x[j] · cos(angle) − x[j + rotary_dim/2] · sin(angle)
//   out[j + rotary_dim/2] = x[j + rotary_dim/2] · cos(angle) + x[j] · sin(angle)
//   out[i] = x[i] for rotary_dim <= i < head_dim
//
// Angles are computed in fp32 from the integer position (no precomputed table, so any position works).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

struct RopeParams {
  int64_t head_dim = 0;    // D (256 or 128)
  int64_t rotary_dim = 0;  // D · partial_rotary_factor, even (64 for D = 256 with factor 0.25)
  float theta = 0.f;       // rope_theta from the config
};

// Throws std::invalid_argument unless 0 < rotary_dim <= head_dim, rotary_dim even, theta > 0.
void validate_rope(const RopeParams& rope);

namespace cpu {

// In place on x [T, num_heads, head_dim] with row stride ldx and head stride head_stride.
// positions: int32 [T].
void rope(float* x, int64_t ldx, int64_t head_stride, int64_t T, int64_t num_heads, const int32_t* positions,
          const RopeParams& rope);

// The full-attention layer's q/k preparation, fused:
//   q_out[t][h][:] = rope(head_rms_norm(q_h) with q_norm_w),   q_h  = qg[t·ldqg + h·2D + (0..D)]
//   k_out[t][h][:] = rope(head_rms_norm(k_h) with k_norm_w),   k_h  = k[t·ldk + h·D + (0..D)]
// qg is q_proj's output [T, Hq·2D] whose heads interleave [q_h; gate_h]. The gate is NOT copied:
// it stays a strided view, gate_h = qg + t·ldqg + h·2D + D (row stride ldqg, head stride 2D), which
// attention() reads directly. q_out [T, Hq, D] and k_out [T, Hkv, D] are dense.
// The norms are (1+w) RMSNorms over D (kernels/norm.h).
void qk_norm_rope(const float* qg, int64_t ldqg, const float* k, int64_t ldk, const float* q_norm_w,
                  const float* k_norm_w, float eps, const int32_t* positions, int64_t T, int64_t num_q_heads,
                  int64_t num_kv_heads, const RopeParams& rope, float* q_out, float* k_out);

}  // namespace cpu

namespace cuda {

// BF16 x in place, fp32 math; positions in device memory.
void rope(bf16* x, int64_t ldx, int64_t head_stride, int64_t T, int64_t num_heads, const int32_t* positions,
          const RopeParams& rope, cudaStream_t stream);

// Fused norm + RoPE + de-interleave, one warp per (token, head), one launch for q and k.
// head_dim even and <= 512 (128 and 256 are the tested ones).
void qk_norm_rope(const bf16* qg, int64_t ldqg, const bf16* k, int64_t ldk, const bf16* q_norm_w,
                  const bf16* k_norm_w, float eps, const int32_t* positions, int64_t T, int64_t num_q_heads,
                  int64_t num_kv_heads, const RopeParams& rope, bf16* q_out, bf16* k_out, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
