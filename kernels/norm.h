// RMSNorm as in transformers' Qwen3NextRMSNorm / Qwen3_5RMSNorm (zero-centred weight):
//
//   y = x · rsqrt(mean(x²) + eps) · (1 + w)
//
// computed in fp32 (x upcast, (1+w) applied in fp32, then cast to the output dtype).
// Every RMSNorm of the model uses this form except the GDN gated norm (kernels/gated_norm.h).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

namespace cpu {

// x [T, H] row stride ldx -> y [T, H] row stride ldy (y may equal x when ldy == ldx).
void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T, int64_t H, float eps);

// Fused pre-norm residual step: residual[t] += x[t]; y[t] = rms_norm(residual[t]).
// residual [T, H] dense (updated in place), x [T, H] row stride ldx, y [T, H] row stride ldy.
void add_rms_norm(float* residual, const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T,
                  int64_t H, float eps);

// Per-head RMSNorm over head_dim (q_norm / k_norm): for t < T, h < num_heads
//   y[t·ldy + h·head_dim + i] = norm(x[t·ldx + h·head_stride_x + i]) · (1 + w[i]),  i < head_dim
// x is read through (row stride ldx, head stride head_stride_x), e.g. the q part of q_proj's
// [q_h; gate_h] output has ldx = Hq·2D, head_stride_x = 2D. y is [T, num_heads, head_dim] with row stride ldy.
void head_rms_norm(const float* x, int64_t ldx, int64_t head_stride_x, const float* w, float* y, int64_t ldy,
                   int64_t T, int64_t num_heads, int64_t head_dim, float eps);

}  // namespace cpu

namespace cuda {

// BF16 x, w, y; fp32 math. One block per row; H up to 16384, any H (vector path when H % 8 == 0
// and rows are 16-byte aligned). With fp8_out (H % 128 == 0, the vector path, 8-byte aligned
// codes): y as BF16 and also quantized into fp8_out, bit-identical to quantize_fp8_per_token_group(y).
void rms_norm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t H, float eps,
              cudaStream_t stream, const Fp8Rows* fp8_out = nullptr);

// residual BF16 [T, H] dense, updated in place (the sum is rounded to bf16 before normalising,
// as in transformers where the residual stream is bf16). fp8_out as for rms_norm.
void add_rms_norm(bf16* residual, const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t H,
                  float eps, cudaStream_t stream, const Fp8Rows* fp8_out = nullptr);

// Per-head RMSNorm, same strides as the CPU version; one warp per (token, head).
void head_rms_norm(const bf16* x, int64_t ldx, int64_t head_stride_x, const bf16* w, bf16* y, int64_t ldy,
                   int64_t T, int64_t num_heads, int64_t head_dim, float eps, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
