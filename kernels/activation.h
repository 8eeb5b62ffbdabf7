// Small elementwise ops of the model: the MLP activation, the vocab-parallel embedding lookup,
// residual adds and dtype conversions.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

namespace cpu {

// x [T, 2I] row stride ldx holding [gate | up] (the gate_up_proj output): y[t][i] =
// silu(x[t][i]) · x[t][I + i], silu(a) = a / (1 + exp(−a)). y [T, I] row stride ldy.
void silu_and_mul(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t T, int64_t I);

// Vocab-parallel embedding: this rank holds table rows for token ids [vocab_start, vocab_start + rows)
// ([rows, H] dense). out[t] = table[ids[t] − vocab_start] when the id is in range, zeros otherwise
// (the all-reduce over ranks then yields the full lookup). out [T, H] dense.
void embedding_lookup(const int32_t* ids, int64_t T, const float* table, int64_t vocab_start, int64_t rows,
                      int64_t H, float* out);

// y[i] += x[i], n elements.
void add_inplace(float* y, const float* x, int64_t n);

}  // namespace cpu

namespace cuda {

// BF16 in/out, fp32 math. With fp8_out (I % 128 == 0): y as BF16 and also quantized into fp8_out,
// bit-identical to quantize_fp8_per_token_group(y) (kernels/gemm.h).
void silu_and_mul(const bf16* x, int64_t ldx, bf16* y, int64_t ldy, int64_t T, int64_t I, cudaStream_t stream,
                  const Fp8Rows* fp8_out = nullptr);

// ids int32 in device memory; table BF16 [rows, H]; out BF16 [T, H].
void embedding_lookup(const int32_t* ids, int64_t T, const bf16* table, int64_t vocab_start, int64_t rows,
                      int64_t H, bf16* out, cudaStream_t stream);

// y[i] = bf16(float(y[i]) + float(x[i])).
void add_inplace(bf16* y, const bf16* x, int64_t n, cudaStream_t stream);

// Dtype conversions, n elements (round to nearest even).
void bf16_to_float(const bf16* x, float* y, int64_t n, cudaStream_t stream);
void float_to_bf16(const float* x, bf16* y, int64_t n, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
