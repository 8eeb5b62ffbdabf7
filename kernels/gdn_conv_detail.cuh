// Internal: the CUDA conv decode kernel, shared by gdn_conv.cu (BF16 output) and gdn_decode.cu
// (fp32 scratch output of the fused decode path).
#pragma once

#include "kernels/cuda_utils.cuh"
#include "kernels/gdn_types.h"

namespace ds::kernels::cuda::conv {

// Channels per thread: one 16-byte vector of BF16 inputs.
constexpr int kVec = 8;
constexpr int kThreads = 128;

// grid (B, channel blocks): one token per sequence, state shifted in place.
template <typename Out>
__global__ void decode_kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride, bool x_vec_ok,
                              const __nv_bfloat16* __restrict__ weight, int64_t channels,
                              float* __restrict__ conv_state_pool, const int32_t* __restrict__ slots,
                              Out* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const int64_t c = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  if (c >= channels) return;
  float* state = conv_state_pool + int64_t(slots[b]) * channels * kGdnConvStateLen;
  float in[kVec];
  cuda_utils::load_vec_or_scalar<kVec>(x + b * x_stride + c, in, x_vec_ok);
  float acc[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    float w[kGdnConvKernel];
    cuda_utils::load_vec<kGdnConvKernel>(weight + (c + i) * kGdnConvKernel, w);
    float* st = state + (c + i) * kGdnConvStateLen;
    const float s0 = st[0], s1 = st[1], s2 = st[2];
    acc[i] = cuda_utils::silu(w[0] * s0 + w[1] * s1 + w[2] * s2 + w[3] * in[i]);
    st[0] = s1;
    st[1] = s2;
    st[2] = in[i];
  }
  cuda_utils::store_vec<kVec>(out + b * channels + c, acc);
}

}  // namespace ds::kernels::cuda::conv
