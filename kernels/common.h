// Types shared by every kernel header. Kernel headers are plain C++ (no CUDA headers) so that
// CPU-only code can include them; the CUDA implementations live in .cu files.
#pragma once

#include <cstdint>

struct CUstream_st;
using cudaStream_t = CUstream_st*;  // same declaration as cuda_runtime_api.h

namespace ds::kernels {

// BF16 storage: bit-identical to __nv_bfloat16, so device pointers can be reinterpreted.
struct bf16 {
  uint16_t bits;
};

float bf16_to_float(bf16 v);
bf16 float_to_bf16(float v);  // round to nearest even, NaN preserved

}  // namespace ds::kernels
