// Causal depthwise conv1d (kernel kGdnConvKernel = 4, no bias) followed by SiLU, over the
// C = 2K+V channels of mixed_qkv, with a per-slot conv state holding each channel's last 3 inputs.
//
//   out[t][c] = silu( sum_{j=0..3} w[c][j] · x[t-3+j][c] )
//
// where inputs before the sequence's first token come from the slot's conv state:
// x[-3+i][c] = state[c][i] (i = 0 oldest .. 2 newest), or zeros when the sequence starts from zero.
// After the call the slot holds the sequence's last 3 inputs (x[n-3..n-1], taking older ones from
// the previous state when the sequence is shorter than 3).
//
// Layouts: x [T, C] row stride x_stride (elements; a view of the merged projection output);
// weight [C][4] (the checkpoint's conv1d.weight [C, 1, 4] squeezed, per-rank rows q|k|v);
// conv_state_pool [num_slots][C][3] fp32 (this layer's pool base); out [T, C] dense.
#pragma once

#include <cstdint>

#include "kernels/common.h"
#include "kernels/gdn_types.h"

namespace ds::kernels {

namespace cpu {

// Variable-length prefill (batch.num_tokens tokens, cu_seqlens/slots/has_initial_state on host).
void gdn_conv_prefill(const float* x, int64_t x_stride, const float* weight, int64_t channels, float* conv_state_pool,
                      const GdnVarlenBatch& batch, float* out);

// One token per sequence: x [B, C] row stride x_stride, slots [B]; the slot state is always used
// (new sequences have zeroed slots). Shifts the new input into the state.
void gdn_conv_decode(const float* x, int64_t x_stride, const float* weight, int64_t channels, float* conv_state_pool,
                     const int32_t* slots, int64_t batch_size, float* out);

}  // namespace cpu

namespace cuda {

// Device pointers: x, weight, out BF16; conv_state_pool fp32; batch arrays in device memory.
// fp32 math. channels must be a multiple of 8 (C = 2K+V always is for dk = dv = 128); x may have
// any row stride (16-byte loads when the rows allow them). Two launches (outputs, then state
// write-back); CUDA-graph safe.
void gdn_conv_prefill(const bf16* x, int64_t x_stride, const bf16* weight, int64_t channels, float* conv_state_pool,
                      const GdnVarlenBatch& batch, bf16* out, cudaStream_t stream);

// One launch; slots in device memory.
void gdn_conv_decode(const bf16* x, int64_t x_stride, const bf16* weight, int64_t channels, float* conv_state_pool,
                     const int32_t* slots, int64_t batch_size, bf16* out, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
