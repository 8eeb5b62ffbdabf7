// Activation quantization for the W8A8 GEMMs, per token and 128-group: scale = amax / 448 (1 for an
// all-zero group), code = e4m3(v / scale) rounded to nearest, saturating. Shared by the quantize
// kernel (gemm.cu) and the ops that write Fp8Rows beside their BF16 output (norm.cu,
// activation.cu), so that every producer is bit-identical to cpu::quantize_fp8_per_token_group.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/cuda_utils.cuh"
#include "kernels/gemm.h"

namespace ds::kernels::fp8_quant {

__device__ __forceinline__ float group_scale(float amax) { return amax > 0.f ? amax / kFp8E4M3Max : 1.f; }

// Four values (v[0] in the lowest byte) as E4M3 codes of a group with this scale.
__device__ __forceinline__ uint32_t codes4(const float* v, float scale) {
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j)
    packed |= uint32_t(__nv_cvt_float_to_fp8(v[j] / scale, __NV_SATFINITE, __NV_E4M3)) << (8 * j);
  return packed;
}

// One 128-group held by a warp, four values per lane (lane l: elements 4l..4l+3): its codes into
// group_codes (128 bytes, 4-byte aligned) and, from lane 0, its scale into *scale.
__device__ __forceinline__ void store_warp_group(const float (&v)[4], uint8_t* group_codes, float* scale) {
  const int lane = threadIdx.x % 32;
  const float s =
      group_scale(cuda_utils::warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])))));
  reinterpret_cast<uint32_t*>(group_codes)[lane] = codes4(v, s);
  if (lane == 0) *scale = s;
}

}  // namespace ds::kernels::fp8_quant
