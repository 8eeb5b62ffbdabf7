// GDN gates from the projection's a and b columns (one value per value head and token):
//
//   g[t][h]    = -exp(A_log[h]) · softplus(a[t][h] + dt_bias[h])   (log of the state decay, <= 0)
//   beta[t][h] = sigmoid(b[t][h])                                  (delta-rule write strength)
//
// softplus(x) = log(1 + exp(x)), taken as x itself for x > 20 (PyTorch's threshold).
// Layouts: a, b [T, Hv] with row strides a_stride, b_stride (views of the merged projection
// output); A_log, dt_bias [Hv] fp32 (the model converts dt_bias to fp32 at load); g, beta [T, Hv]
// dense fp32 on both backends.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

namespace cpu {
void gdn_gating(const float* a, int64_t a_stride, const float* b, int64_t b_stride, const float* A_log,
                const float* dt_bias, int64_t num_tokens, int64_t num_v_heads, float* g, float* beta);
}  // namespace cpu

namespace cuda {
// a, b BF16 device views; A_log, dt_bias, g, beta fp32 device pointers. One launch.
void gdn_gating(const bf16* a, int64_t a_stride, const bf16* b, int64_t b_stride, const float* A_log,
                const float* dt_bias, int64_t num_tokens, int64_t num_v_heads, float* g, float* beta,
                cudaStream_t stream);
}  // namespace cuda

}  // namespace ds::kernels
