// Internal: the CUDA decode kernel of the gated delta rule (dk = dv = 128), shared by
// gated_delta_rule.cu (plain decode) and gdn_decode.cu (fused with gating and gated RMSNorm).
#pragma once

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule_detail.cuh"
#include "kernels/gated_norm_detail.cuh"
#include "kernels/gdn_gating_detail.cuh"

namespace ds::kernels::cuda::gdr {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeRowsPerWarp = kHeadDim / kDecodeWarps;

// In = element type of q/k/v (bf16 conv output, or the fp32 scratch of the fused path).
template <typename In>
struct DecodeParams {
  const In* q;  // [B] rows of qkv_stride; key head kh at q + kh·128
  const In* k;
  const In* v;  // value head h at v + h·128
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
  float* state_pool;  // [slots][Hv][128][128]
  const int32_t* slots;
  int64_t num_v_heads;
  int64_t ratio;
  __nv_bfloat16* out;  // [B][Hv][128]
};

// One block of kDecodeWarps warps per (sequence, value head): blockIdx.x = b·Hv + h. Each warp
// updates kDecodeRowsPerWarp rows of the head's state, loading them all up front so that the
// whole 64 KB head state is in flight at once.
template <typename In, bool kFused>
__global__ void __launch_bounds__(kDecodeWarps * 32) decode_kernel(DecodeParams<In> p) {
  const int64_t b = blockIdx.x / p.num_v_heads, h = blockIdx.x % p.num_v_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kh = h / p.ratio;
  float* state = p.state_pool + (int64_t(p.slots[b]) * p.num_v_heads + h) * kHeadDim * kHeadDim;
  const int row0 = warp * kDecodeRowsPerWarp;

  Lane4 rows[kDecodeRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kDecodeRowsPerWarp; ++r) rows[r] = load_lane4(state + (row0 + r) * kHeadDim);
  const Lane4 k = l2_normalized(load_lane4(p.k + b * p.qkv_stride + kh * kHeadDim), 1.f);
  const Lane4 q = l2_normalized(load_lane4(p.q + b * p.qkv_stride + kh * kHeadDim), rsqrtf(float(kHeadDim)));
  float v[kDecodeRowsPerWarp];
  const In* v_head = p.v + b * p.qkv_stride + h * kHeadDim + row0;
#pragma unroll
  for (int r = 0; r < kDecodeRowsPerWarp; ++r) v[r] = cuda_utils::to_float(v_head[r]);
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
    }
  }
}

}  // namespace ds::kernels::cuda::gdr
