// Internal: one element of the gated RMSNorm, shared by gated_norm.cu and gdn_decode.cu.
#pragma once

#include "kernels/cuda_utils.cuh"

namespace ds::kernels::cuda {

// x · inv_rms · w · silu(z)
__device__ __forceinline__ float gated_norm_value(float x, float inv_rms, float w, float z) {
  return x * inv_rms * w * (z / (1.f + expf(-z)));
}

}  // namespace ds::kernels::cuda
