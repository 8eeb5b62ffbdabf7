#include <stdexcept>

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_norm.h"
#include "kernels/gated_norm_detail.cuh"
#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cuda {

namespace {

constexpr int kVec = 8;
constexpr int kWarpsPerBlock = 4;

// One warp per (token, head) row; lanes own 8-element vectors, looping for head_dim > 256.
__global__ void gated_norm_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ z,
                                  int64_t z_stride, bool z_vec_ok, const __nv_bfloat16* __restrict__ weight,
                                  int64_t num_rows, int64_t num_heads, int64_t head_dim, float eps,
                                  __nv_bfloat16* __restrict__ out) {
  cuda_utils::allow_dependent_launch();  // out_proj starts streaming its weights
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= num_rows) return;
  const int64_t t = row / num_heads, h = row % num_heads;
  const __nv_bfloat16* xr = x + row * head_dim;
  const __nv_bfloat16* zr = z + t * z_stride + h * head_dim;
  __nv_bfloat16* yr = out + row * head_dim;
  float sum_sq = 0.f;
  for (int64_t i = lane * kVec; i < head_dim; i += 32 * kVec) {
    float v[kVec];
    cuda_utils::load_vec<kVec>(xr + i, v);
#pragma unroll
    for (int j = 0; j < kVec; ++j) sum_sq += v[j] * v[j];
  }
  const float inv_rms = rsqrtf(cuda_utils::warp_sum(sum_sq) / float(head_dim) + eps);
  for (int64_t i = lane * kVec; i < head_dim; i += 32 * kVec) {
    float v[kVec], zv[kVec], w[kVec], y[kVec];
    cuda_utils::load_vec<kVec>(xr + i, v);
    cuda_utils::load_vec_or_scalar<kVec>(zr + i, zv, z_vec_ok);
    cuda_utils::load_vec<kVec>(weight + i, w);
#pragma unroll
    for (int j = 0; j < kVec; ++j) y[j] = gated_norm_value(v[j], inv_rms, w[j], zv[j]);
    cuda_utils::store_vec<kVec>(yr + i, y);
  }
}

}  // namespace

void gated_rms_norm(const bf16* x, const bf16* z, int64_t z_stride, const bf16* weight, int64_t num_tokens,
                    int64_t num_heads, int64_t head_dim, float eps, bf16* out, cudaStream_t stream) {
  check_positive(num_heads, "gated_rms_norm", "num_heads");
  check_positive(head_dim, "gated_rms_norm", "head_dim");
  check_row_stride(z_stride, num_heads * head_dim, "gated_rms_norm", "z");
  if (head_dim % kVec != 0 || !cuda_utils::is_aligned(x, 16) || !cuda_utils::is_aligned(out, 16) ||
      !cuda_utils::is_aligned(weight, 16)) {
    throw std::invalid_argument(
        "gated_rms_norm: the CUDA kernel needs head_dim a multiple of 8 and 16-byte aligned x, "
        "weight and out");
  }
  if (num_tokens <= 0) return;
  const int64_t rows = num_tokens * num_heads;
  gated_norm_kernel<<<cuda_utils::grid_dim(rows, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
      cuda_utils::as_nv(x), cuda_utils::as_nv(z), z_stride, cuda_utils::rows_vector_aligned(z, z_stride, 16),
      cuda_utils::as_nv(weight), rows, num_heads, head_dim, eps, cuda_utils::as_nv(out));
  cuda_utils::check_launch("gated_rms_norm");
}

}  // namespace ds::kernels::cuda
