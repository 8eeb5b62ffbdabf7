// Activation quantization for the W8A8 GEMMs, per token and 128-group: scale = amax / 448 (1 for an
// all-zero group), code = e4m3(v / scale) rounded to nearest, saturating. Shared by the quantize
// kernel (gemm.cu) and the ops that write Fp8Rows beside their BF16 output (norm.cu,
// activation.cu), so that every producer is bit-identical to cpu::quantize_fp8_per_token_group.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

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

}  // namespace ds::kernels::fp8_quant
