#include "kernels/cuda_utils.cuh"
#include "kernels/gdn_batch_check.h"
#include "kernels/gdn_gating.h"
#include "kernels/gdn_gating_detail.cuh"

namespace ds::kernels::cuda {

namespace {

__global__ void gating_kernel(const __nv_bfloat16* __restrict__ a, int64_t a_stride,
                              const __nv_bfloat16* __restrict__ b, int64_t b_stride, const float* __restrict__ A_log,
                              const float* __restrict__ dt_bias, int64_t num_tokens, int64_t num_v_heads,
                              float* __restrict__ g, float* __restrict__ beta) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_tokens * num_v_heads) return;
  const int64_t t = i / num_v_heads, h = i % num_v_heads;
  const GdnGates gates =
      gdn_gates(__bfloat162float(a[t * a_stride + h]), __bfloat162float(b[t * b_stride + h]), A_log[h], dt_bias[h]);
  g[i] = gates.g;
  beta[i] = gates.beta;
}

}  // namespace

void gdn_gating(const bf16* a, int64_t a_stride, const bf16* b, int64_t b_stride, const float* A_log,
                const float* dt_bias, int64_t num_tokens, int64_t num_v_heads, float* g, float* beta,
                cudaStream_t stream) {
  check_positive(num_v_heads, "gdn_gating", "num_v_heads");
  check_row_stride(a_stride, num_v_heads, "gdn_gating", "a");
  check_row_stride(b_stride, num_v_heads, "gdn_gating", "b");
  if (num_tokens <= 0) return;
  constexpr int kThreads = 256;
  gating_kernel<<<cuda_utils::grid_dim(num_tokens * num_v_heads, kThreads), kThreads, 0, stream>>>(
      cuda_utils::as_nv(a), a_stride, cuda_utils::as_nv(b), b_stride, A_log, dt_bias, num_tokens, num_v_heads, g, beta);
  cuda_utils::check_launch("gdn_gating");
}

}  // namespace ds::kernels::cuda
