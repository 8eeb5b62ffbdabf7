// The fused GDN decode step: for a batch of B sequences with one new token each, everything
// between the input projection and out_proj:
//   conv update (+ SiLU) → gating (g, β) → L2 norm of q, k → gated delta rule → gated RMSNorm.
// Equals, token for token, cpu::gdn_conv_decode → cpu::gdn_gating → cpu::gated_delta_rule_decode
// → cpu::gated_rms_norm (which is exactly what cpu::gdn_decode runs).
//
// Inputs are row-strided views of the projection output for the B tokens (fused form: one
// [B, dims.merged_width()] buffer with mixed_qkv at col 0, z at dims.z_offset(), b at
// dims.b_offset(), a at dims.a_offset(), all with row stride merged_width(); the split form's
// dense buffers work too).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/gdn_types.h"

namespace ds::kernels {

// Views and weights of one GDN layer's decode step. T = float on the CPU, bf16 on CUDA.
template <typename T>
struct GdnDecodeInputs {
  const T* mixed_qkv = nullptr;  // [B, C] row stride mixed_qkv_stride (pre-conv q|k|v)
  int64_t mixed_qkv_stride = 0;
  const T* z = nullptr;  // [B, V] row stride z_stride
  int64_t z_stride = 0;
  const T* b = nullptr;  // [B, Hv] row stride b_stride
  int64_t b_stride = 0;
  const T* a = nullptr;  // [B, Hv] row stride a_stride
  int64_t a_stride = 0;
  const T* conv_weight = nullptr;  // [C][4]
  const float* A_log = nullptr;    // [Hv] fp32
  const float* dt_bias = nullptr;  // [Hv] fp32
  const T* norm_weight = nullptr;  // [dv] plain gated-RMSNorm weight
  float norm_eps = 1e-6f;
};

// This layer's state pools and the batch's slots (distinct per sequence).
struct GdnDecodeState {
  float* conv_state_pool = nullptr;  // [num_slots][C][3] fp32
  float* ssm_state_pool = nullptr;   // [num_slots][Hv][dv][dk] fp32
  const int32_t* slots = nullptr;    // int32 [B]
};

namespace cpu {
// out [B][Hv·dv] dense. Uses a temporary heap buffer for the intermediates.
void gdn_decode(const GdnDecodeInputs<float>& in, const GdnDecodeState& state, int64_t batch_size, const GdnDims& dims,
                float* out);
}  // namespace cpu

namespace cuda {
// Device pointers; dk = dv = 128 and Hv/Hk <= 8 required. One launch: one block per (sequence,
// value head), the r = Hv/Hk blocks of a key head forming a thread-block cluster so that the q/k
// conv state is overwritten only after all of them have read it. out [B][Hv·dv] BF16 dense.
// fp8_out (optional; B rows of K = Hv·dv): out also quantized per token and 128-group, i.e. per
// value head, as the W8A8 out_proj after it would (kernels::Fp8Rows). CUDA-graph safe.
void gdn_decode(const GdnDecodeInputs<bf16>& in, const GdnDecodeState& state, int64_t batch_size, const GdnDims& dims,
                bf16* out, cudaStream_t stream, const Fp8Rows* fp8_out = nullptr);
}  // namespace cuda

}  // namespace ds::kernels
