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

// Activation rows quantized for the W8A8 GEMMs, per token and 128-group, in the layout of
// quantize_fp8_per_token_group (kernels/gemm.h): codes [T][K] E4M3, scales [K/128][T], T the rows
// of the op that writes them (device memory). The norms and SiLU-mul can write them beside their
// BF16 output, which spares the GEMM after them its own quantize launch.
struct Fp8Rows {
  uint8_t* codes = nullptr;
  float* scales = nullptr;
};
// The most rows the ops hand over as Fp8Rows: the W8A8 skinny kernel's largest T (larger steps'
// GEMMs run cuBLASLt, which quantizes and pads its rows its own way).
inline constexpr int64_t kFp8RowsMaxTokens = 64;

}  // namespace ds::kernels
