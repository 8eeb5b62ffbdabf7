// Internal: the CUDA decode kernel of the gated delta rule (dk = dv = 128), shared by
// gated_delta_rule.cu (plain decode) and gdn_decode.cu (fused with conv, gating and gated RMSNorm).
#pragma once

#include <cooperative_groups.h>

#include "kernels/cuda_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/gated_delta_rule_detail.cuh"
#include "kernels/gated_norm_detail.cuh"
#include "kernels/gdn_gating_detail.cuh"
#include "kernels/gdn_types.h"

namespace ds::kernels::cuda::gdr {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeRowsPerWarp = kHeadDim / kDecodeWarps;

struct DecodeParams {
  // Plain decode: the conv output's q, k, v ([B] rows of qkv_stride; key head kh at q + kh·128,
  // value head h at v + h·128). Fused decode: q = the pre-conv mixed_qkv row (k, v unused).
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  int64_t qkv_stride;
  // Plain decode: precomputed gates [B][Hv] fp32.
  const float* g;
  const float* beta;
  // Fused decode: raw a/b views and the gate parameters, z view and norm weight.
  const __nv_bfloat16* a;
  int64_t a_stride;
  const __nv_bfloat16* b;
  int64_t b_stride;
  const float* A_log;
  const float* dt_bias;
  const __nv_bfloat16* z;
  int64_t z_stride;
  bool z_vec_ok;  // z rows allow 8-byte loads
  const __nv_bfloat16* norm_weight;
  float norm_eps;
  const __nv_bfloat16* conv_weight;  // [C][4]
  float* conv_state_pool;            // [slots][C][3]
  int64_t key_dim;                   // K
  int64_t conv_dim;                  // C = 2K + V
  float* state_pool;                 // [slots][Hv][128][128]
  const int32_t* slots;
  int64_t num_v_heads;
  int64_t ratio;
  __nv_bfloat16* out;  // [B][Hv][128]
  // Fused decode, optional (null codes: none): out quantized per token and 128-group, i.e. per
  // value head (Fp8Rows: codes [B][Hv·128], scales [Hv][B]).
  uint8_t* fp8_codes;
  float* fp8_scales;
};

// The head's 128 gated-norm outputs (4 per lane of warp 0) as the FP8 row group (b, h): their BF16
// values quantized exactly as cpu::quantize_fp8_per_token_group does (kernels/fp8_quant.cuh).
__device__ __forceinline__ void quantize_head(const DecodeParams& p, int64_t b, int64_t h, const float (&y)[kPerLane]) {
  static_assert(kPerLane == 4, "a warp group holds four values per lane");
  float v[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) v[j] = __bfloat162float(__float2bfloat16_rn(y[j]));
  const int64_t batch = gridDim.x / p.num_v_heads;
  fp8_quant::store_warp_group(v, p.fp8_codes + (b * p.num_v_heads + h) * kHeadDim, p.fp8_scales + h * batch + b);
}

// Fused decode, first step: the causal conv (+ SiLU) of the block's 384 channels (q and k of key
// head kh, v of value head h) from the old conv state, into qkv_s. The blocks of one key head's r
// value heads form a thread-block cluster: after a cluster barrier (every block has read the old
// q/k state) the cluster's first block writes the q/k conv state and every block its own v state.
__device__ __forceinline__ void conv_update_head(const DecodeParams& p, int64_t b, int64_t h, int64_t kh,
                                                 float* qkv_s) {
  constexpr int kChannels = 3 * kHeadDim;
  constexpr int kPerThread = (kChannels + kDecodeWarps * 32 - 1) / (kDecodeWarps * 32);
  const __nv_bfloat16* x_row = p.q + b * p.qkv_stride;
  float* state = p.conv_state_pool + int64_t(p.slots[b]) * p.conv_dim * kGdnConvStateLen;
  float* channel_state[kPerThread];
  float shifted[kPerThread][kGdnConvStateLen];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int j = threadIdx.x + i * kDecodeWarps * 32;
    channel_state[i] = nullptr;
    if (j >= kChannels) continue;
    const int part = j / kHeadDim, jj = j % kHeadDim;
    const int64_t c = part == 0   ? kh * kHeadDim + jj
                      : part == 1 ? p.key_dim + kh * kHeadDim + jj
                                  : 2 * p.key_dim + h * kHeadDim + jj;
    float w[kGdnConvKernel];
    cuda_utils::load_vec<kGdnConvKernel>(p.conv_weight + c * kGdnConvKernel, w);
    const float* st = state + c * kGdnConvStateLen;
    const float x = __bfloat162float(x_row[c]);
    qkv_s[j] = cuda_utils::silu(w[0] * st[0] + w[1] * st[1] + w[2] * st[2] + w[3] * x);
    shifted[i][0] = st[1];
    shifted[i][1] = st[2];
    shifted[i][2] = x;
    if (part == 2 || cooperative_groups::this_cluster().block_rank() == 0)
      channel_state[i] = state + c * kGdnConvStateLen;
  }
  cooperative_groups::this_cluster().sync();  // also makes qkv_s visible to the whole block
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    if (channel_state[i] == nullptr) continue;
#pragma unroll
    for (int j = 0; j < kGdnConvStateLen; ++j) channel_state[i][j] = shifted[i][j];
  }
}

// One block of kDecodeWarps warps per (sequence, value head): blockIdx.x = b·Hv + h. Each warp
// updates kDecodeRowsPerWarp rows of the head's state, loading them all up front so that the
// whole 64 KB head state is in flight at once. kFused: launched in clusters of r blocks (the value
// heads of one key head), with the conv, the gates and the gated RMSNorm folded in.
template <bool kFused>
__global__ void __launch_bounds__(kDecodeWarps * 32) decode_kernel(DecodeParams p) {
  const int64_t b = blockIdx.x / p.num_v_heads, h = blockIdx.x % p.num_v_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kh = h / p.ratio;
  float* state = p.state_pool + (int64_t(p.slots[b]) * p.num_v_heads + h) * kHeadDim * kHeadDim;
  const int row0 = warp * kDecodeRowsPerWarp;

  Lane4 rows[kDecodeRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kDecodeRowsPerWarp; ++r) rows[r] = load_lane4(state + (row0 + r) * kHeadDim);
  Lane4 k_raw, q_raw;
  float v[kDecodeRowsPerWarp];
  if constexpr (kFused) {
    __shared__ __align__(16) float qkv_s[3 * kHeadDim];
    conv_update_head(p, b, h, kh, qkv_s);
    q_raw = load_lane4(qkv_s);
    k_raw = load_lane4(qkv_s + kHeadDim);
#pragma unroll
    for (int r = 0; r < kDecodeRowsPerWarp; ++r) v[r] = qkv_s[2 * kHeadDim + row0 + r];
  } else {
    q_raw = load_lane4(p.q + b * p.qkv_stride + kh * kHeadDim);
    k_raw = load_lane4(p.k + b * p.qkv_stride + kh * kHeadDim);
    const __nv_bfloat16* v_head = p.v + b * p.qkv_stride + h * kHeadDim + row0;
#pragma unroll
    for (int r = 0; r < kDecodeRowsPerWarp; ++r) v[r] = __bfloat162float(v_head[r]);
  }
  const Lane4 k = l2_normalized(k_raw, 1.f);
  const Lane4 q = l2_normalized(q_raw, rsqrtf(float(kHeadDim)));
  float g, beta;
  if constexpr (kFused) {
    const GdnGates gates = gdn_gates(__bfloat162float(p.a[b * p.a_stride + h]),
                                     __bfloat162float(p.b[b * p.b_stride + h]), p.A_log[h], p.dt_bias[h]);
    g = gates.g;
    beta = gates.beta;
  } else {
    g = p.g[b * p.num_v_heads + h];
    beta = p.beta[b * p.num_v_heads + h];
  }

  float o[kDecodeRowsPerWarp];
  update_rows(rows, v, k, q, expf(g), beta, o);
#pragma unroll
  for (int r = 0; r < kDecodeRowsPerWarp; ++r) {
    float* dst = state + (row0 + r) * kHeadDim + lane * kPerLane;
    *reinterpret_cast<float4*>(dst) = make_float4(rows[r].v[0], rows[r].v[1], rows[r].v[2], rows[r].v[3]);
  }

  __nv_bfloat16* out = p.out + (b * p.num_v_heads + h) * kHeadDim;
  if constexpr (!kFused) {
    if (lane < kDecodeRowsPerWarp) {
      float mine = 0.f;
#pragma unroll
      for (int r = 0; r < kDecodeRowsPerWarp; ++r) mine = lane == r ? o[r] : mine;
      out[row0 + lane] = __float2bfloat16_rn(mine);
    }
  } else {
    // Gated RMSNorm over the head's 128 outputs: gather them in shared memory, warp 0 finishes.
    __shared__ float o_head[kHeadDim];
    if (lane < kDecodeRowsPerWarp) {
      float mine = 0.f;
#pragma unroll
      for (int r = 0; r < kDecodeRowsPerWarp; ++r) mine = lane == r ? o[r] : mine;
      o_head[row0 + lane] = mine;
    }
    __syncthreads();
    if (warp == 0) {
      Lane4 x;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) x.v[j] = o_head[lane * kPerLane + j];
      const float inv_rms = rsqrtf(cuda_utils::warp_sum(dot4(x, x)) / float(kHeadDim) + p.norm_eps);
      Lane4 z;
      cuda_utils::load_vec_or_scalar<kPerLane>(p.z + b * p.z_stride + h * kHeadDim + lane * kPerLane, z.v, p.z_vec_ok);
      const Lane4 w = load_lane4(p.norm_weight);
      float y[kPerLane];
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) y[j] = gated_norm_value(x.v[j], inv_rms, w.v[j], z.v[j]);
      cuda_utils::store_vec<kPerLane>(out + lane * kPerLane, y);
      if (p.fp8_codes != nullptr) quantize_head(p, b, h, y);
    }
  }
}

}  // namespace ds::kernels::cuda::gdr
