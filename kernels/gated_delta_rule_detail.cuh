// Internal to the CUDA gated delta rule (gated_delta_rule*.cu, gdn_decode.cu): the per-warp
// building blocks for dk = dv = 128. A warp holds a 128-wide vector as 4 consecutive floats per
// lane (lane l owns elements [4l, 4l+4)), so a state row S[i][:] is one coalesced float4 per lane.
#pragma once

#include "kernels/cuda_utils.cuh"

namespace ds::kernels::cuda::gdr {

constexpr int kHeadDim = 128;
constexpr int kPerLane = kHeadDim / 32;
constexpr float kL2NormEps = 1e-6f;

struct Lane4 {
  float v[kPerLane];
};

template <typename T>
__device__ __forceinline__ Lane4 load_lane4(const T* row) {
  Lane4 r;
  cuda_utils::load_vec<kPerLane>(row + (threadIdx.x % 32) * kPerLane, r.v);
  return r;
}

__device__ __forceinline__ float dot4(const Lane4& a, const Lane4& b) {
  return a.v[0] * b.v[0] + a.v[1] * b.v[1] + a.v[2] * b.v[2] + a.v[3] * b.v[3];
}

// x / sqrt(|x|² + 1e-6) · scale, the norm taken over the whole warp's 128 elements.
__device__ __forceinline__ Lane4 l2_normalized(Lane4 x, float scale) {
  const float f = rsqrtf(cuda_utils::warp_sum(dot4(x, x)) + kL2NormEps) * scale;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) x.v[j] *= f;
  return x;
}

// One token's update of ROWS state rows held by this warp (row r of the head is rows[r]):
// S ← decay·S; u = β(v − S k̂); S ← S + u k̂ᵀ; o = S q̂. v[r] is row r's value; o[r] receives
// the output, identical in every lane.
template <int ROWS>
__device__ __forceinline__ void update_rows(Lane4 (&rows)[ROWS], const float (&v)[ROWS], const Lane4& k, const Lane4& q,
                                            float decay, float beta, float (&o)[ROWS]) {
  float kv[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) kv[r] = dot4(rows[r], k);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) kv[r] += __shfl_xor_sync(0xffffffffu, kv[r], off);
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const float u = beta * (v[r] - decay * kv[r]);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) rows[r].v[j] = decay * rows[r].v[j] + u * k.v[j];
    o[r] = dot4(rows[r], q);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) o[r] += __shfl_xor_sync(0xffffffffu, o[r], off);
  }
}

}  // namespace ds::kernels::cuda::gdr
