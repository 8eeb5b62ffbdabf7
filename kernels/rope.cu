#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_utils.cuh"
#include "kernels/rope.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using cuda_utils::check_launch;
using cuda_utils::warp_sum;

constexpr int kMaxHeadDim = 512;
constexpr int kWarpsPerBlock = 4;

// Same rounding as the CPU reference: double pow rounded to fp32, fp32 angle, precise sincos.
__device__ __forceinline__ void rotation(int32_t position, int64_t j, int64_t rotary_dim, float theta, float& c,
                                         float& s) {
  const float inv_freq = float(pow(double(theta), -double(2 * j) / double(rotary_dim)));
  sincosf(float(position) * inv_freq, &s, &c);
}

// Rotates the first rotary_dim values of one head held in fp32 (shared memory of one warp).
__device__ __forceinline__ void rotate_head(float* head, int32_t position, const RopeParams& rope, int lane) {
  const int64_t half = rope.rotary_dim / 2;
  for (int64_t j = lane; j < half; j += 32) {
    float c, s;
    rotation(position, j, rope.rotary_dim, rope.theta, c, s);
    const float a = head[j], b = head[j + half];
    head[j] = a * c - b * s;
    head[j + half] = b * c + a * s;
  }
}

// Thread per (token, head, rotary pair).
__global__ void rope_kernel(__nv_bfloat16* x, int64_t ldx, int64_t head_stride, int64_t T, int64_t num_heads,
                            const int32_t* positions, RopeParams rope) {
  const int64_t half = rope.rotary_dim / 2;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= T * num_heads * half) return;
  const int64_t j = idx % half, h = (idx / half) % num_heads, t = idx / (half * num_heads);
  __nv_bfloat16* head = x + t * ldx + h * head_stride;
  float c, s;
  rotation(positions[t], j, rope.rotary_dim, rope.theta, c, s);
  const float a = __bfloat162float(head[j]), b = __bfloat162float(head[j + half]);
  head[j] = __float2bfloat16(a * c - b * s);
  head[j + half] = __float2bfloat16(b * c + a * s);
}

// One warp per (token, head); heads [0, Hq) are query heads, [Hq, Hq + Hkv) key heads.
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    qk_norm_rope_kernel(const __nv_bfloat16* qg, int64_t ldqg, const __nv_bfloat16* k, int64_t ldk,
                        const __nv_bfloat16* q_norm_w, const __nv_bfloat16* k_norm_w, float eps,
                        const int32_t* positions, int64_t T, int64_t num_q_heads, int64_t num_kv_heads,
                        RopeParams rope, __nv_bfloat16* q_out, __nv_bfloat16* k_out) {
  __shared__ float buffers[kWarpsPerBlock][kMaxHeadDim];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t heads = num_q_heads + num_kv_heads;
  const int64_t item = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (item >= T * heads) return;
  const int64_t t = item / heads, h = item % heads, D = rope.head_dim;
  const bool is_q = h < num_q_heads;
  const __nv_bfloat16* src = is_q ? qg + t * ldqg + h * 2 * D : k + t * ldk + (h - num_q_heads) * D;
  const __nv_bfloat16* w = is_q ? q_norm_w : k_norm_w;
  __nv_bfloat16* dst = is_q ? q_out + (t * num_q_heads + h) * D : k_out + (t * num_kv_heads + h - num_q_heads) * D;
  float* head = buffers[warp];

  float sum_sq = 0.f;
  for (int64_t i = lane; i < D; i += 32) {
    const float f = __bfloat162float(src[i]);
    head[i] = f;
    sum_sq += f * f;
  }
  const float inv_rms = rsqrtf(warp_sum(sum_sq) / float(D) + eps);
  for (int64_t i = lane; i < D; i += 32) head[i] = head[i] * inv_rms * (1.f + __bfloat162float(w[i]));
  __syncwarp();
  rotate_head(head, positions[t], rope, lane);
  __syncwarp();
  for (int64_t i = lane; i < D; i += 32) dst[i] = __float2bfloat16(head[i]);
}

}  // namespace

void rope(bf16* x, int64_t ldx, int64_t head_stride, int64_t T, int64_t num_heads, const int32_t* positions,
          const RopeParams& params, cudaStream_t stream) {
  validate_rope(params);
  if (T <= 0 || num_heads <= 0) return;
  const int64_t n = T * num_heads * (params.rotary_dim / 2);
  rope_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(as_nv(x), ldx, head_stride, T, num_heads, positions,
                                                             params);
  check_launch("cuda::rope");
}

void qk_norm_rope(const bf16* qg, int64_t ldqg, const bf16* k, int64_t ldk, const bf16* q_norm_w,
                  const bf16* k_norm_w, float eps, const int32_t* positions, int64_t T, int64_t num_q_heads,
                  int64_t num_kv_heads, const RopeParams& params, bf16* q_out, bf16* k_out, cudaStream_t stream) {
  validate_rope(params);
  if (params.head_dim > kMaxHeadDim) {
    throw std::invalid_argument("cuda::qk_norm_rope: head_dim " + std::to_string(params.head_dim) + " > " +
                                std::to_string(kMaxHeadDim));
  }
  if (T <= 0) return;
  const int64_t items = T * (num_q_heads + num_kv_heads);
  qk_norm_rope_kernel<<<unsigned((items + kWarpsPerBlock - 1) / kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
      as_nv(qg), ldqg, as_nv(k), ldk, as_nv(q_norm_w), as_nv(k_norm_w), eps, positions, T, num_q_heads, num_kv_heads,
      params, as_nv(q_out), as_nv(k_out));
  check_launch("cuda::qk_norm_rope");
}

}  // namespace ds::kernels::cuda
