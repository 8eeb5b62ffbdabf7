// GDN's gated RMSNorm (Qwen3-Next's RMSNormGated), per value head of every token:
//
//   y[t][h][i] = x[t][h][i] / sqrt(mean_i(x[t][h][:]²) + eps) · w[i] · silu(z[t][h][i])
//
// with a plain weight w [dv] shared by all heads (NOT the 1+w of the model's other RMSNorms) and
// eps from config (rms_norm_eps).
// Layouts: x [T][Hv][dv] dense (the gated delta rule output); z [T][Hv·dv] with row stride
// z_stride (a view of the merged projection output); out [T][Hv·dv] dense (out_proj's input).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

namespace cpu {
void gated_rms_norm(const float* x, const float* z, int64_t z_stride, const float* weight, int64_t num_tokens,
                    int64_t num_heads, int64_t head_dim, float eps, float* out);
}  // namespace cpu

namespace cuda {
// x, z, weight, out BF16 device pointers; fp32 math; one launch. head_dim must be a multiple of 8
// and x, weight, out 16-byte aligned (throws std::invalid_argument otherwise); z may have any
// stride (16-byte vector loads when its rows allow them).
void gated_rms_norm(const bf16* x, const bf16* z, int64_t z_stride, const bf16* weight, int64_t num_tokens,
                    int64_t num_heads, int64_t head_dim, float eps, bf16* out, cudaStream_t stream);
}  // namespace cuda

}  // namespace ds::kernels
