// The 64×64 output tile of y = x·Wᵀ on tensor cores, shared by the dense block-FP8 GEMM
// (gemm.cu) and the grouped expert GEMMs of the MoE block (moe.cu). W is BF16 or block-FP8 E4M3
// (128×128 fp32 weight_scale_inv blocks, see gemm.h).
//
// A 128-thread block computes rows [t0, t0+64) × columns [n0, n0+64); warps form a 2×2 grid of
// 32×32 sub-tiles (2 m-tiles × 4 n-tiles of mma.m16n8k16). Per 64-wide k-step the x tile and the
// W tile go to swizzled shared memory (FP8 converted exactly to BF16: every E4M3 value is a BF16
// value), the next k-step's global loads overlapping the MMAs. For FP8, the products of one
// 128-wide k block accumulate unscaled and are then multiplied by that block's scale (uniform over
// the tile: 64 rows never straddle a 128-row scale block), so the weight is applied exactly.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "kernels/attention_mma.cuh"
#include "kernels/gemm.h"

namespace ds::kernels::gemm_tile {

constexpr int kBM = 64, kBN = 64, kBK = 64, kThreads = 128;
constexpr int kChunks = kBK / 8;  // 16-byte chunks per shared tile row

struct SharedTiles {
  uint4 x[kBM * kChunks];
  uint4 w[kBN * kChunks];
};

__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 raw) {
  const uint32_t words[2] = {raw.x, raw.y};
  uint32_t out[4];
#pragma unroll
  for (int w = 0; w < 2; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __nv_fp8x2_storage_t pair = __nv_fp8x2_storage_t(words[w] >> (16 * h));
      const __half2_raw halves = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&halves));
      out[w * 2 + h] = mma::pack_bf16x2(f.x, f.y);
    }
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// W element type: __nv_bfloat16 (scale_inv unused) or uint8_t (FP8 E4M3 with block scales).
// x [rows, K] row stride ldx, W [N, K] dense, y [rows, N] row stride ldy; y = x·Wᵀ + beta·y.
// K, ldx multiples of 8 and x/W rows 16-byte (BF16) or 8-byte (FP8) aligned.
template <typename WeightT>
__device__ __forceinline__ void compute_tile(const __nv_bfloat16* __restrict__ x, int64_t ldx,
                                             const WeightT* __restrict__ w, const float* __restrict__ scale_inv,
                                             __nv_bfloat16* __restrict__ y, int64_t ldy, int64_t rows, int64_t N,
                                             int64_t K, int64_t t0, int64_t n0, float beta, SharedTiles& sh) {
  constexpr bool kFp8 = sizeof(WeightT) == 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int64_t scale_cols = (K + kFp8BlockSize - 1) / kFp8BlockSize;

  // Each thread moves kPerThread 16-byte chunks of x and of W per k-step. The next k-step's
  // chunks are loaded into registers while the current one is multiplied (software pipelining).
  constexpr int kPerThread = kBM * kChunks / kThreads;
  static_assert(kBM == kBN, "x and W tiles have the same number of chunks");
  using WChunk = std::conditional_t<kFp8, uint2, uint4>;  // 8 weights
  uint4 x_regs[kPerThread];
  WChunk w_regs[kPerThread];
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int i = tid + j * kThreads, row = i / kChunks, chunk = i % kChunks;
      const int64_t t = t0 + row, n = n0 + row, k = k0 + chunk * 8;
      x_regs[j] = t < rows && k < K ? *reinterpret_cast<const uint4*>(x + t * ldx + k) : make_uint4(0, 0, 0, 0);
      w_regs[j] = n < N && k < K ? *reinterpret_cast<const WChunk*>(w + n * K + k) : WChunk{};
    }
  };
  float acc[2][4][4] = {}, part[2][4][4] = {};
  load(0);
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int i = tid + j * kThreads, row = i / kChunks, chunk = i % kChunks;
      sh.x[mma::swizzled_chunk(row, chunk, kChunks)] = x_regs[j];
      if constexpr (kFp8) {
        sh.w[mma::swizzled_chunk(row, chunk, kChunks)] = fp8x8_to_bf16x8(w_regs[j]);
      } else {
        sh.w[mma::swizzled_chunk(row, chunk, kChunks)] = w_regs[j];
      }
    }
    __syncthreads();
    if (k0 + kBK < K) load(k0 + kBK);
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t a[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        mma::ldmatrix_x4(a[mi], &sh.x[mma::a_fragment_chunk(lane, wm + mi * 16, ks * 2, kChunks)]);
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, &sh.w[mma::b_fragment_chunk(lane, wn + np * 16, ks * 2, kChunks)]);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma::mma_bf16(part[mi][np * 2], a[mi], b[0], b[1]);
          mma::mma_bf16(part[mi][np * 2 + 1], a[mi], b[2], b[3]);
        }
      }
    }
    __syncthreads();
    const int64_t k_end = k0 + kBK;
    if (k_end % kFp8BlockSize == 0 || k_end >= K) {
      const float s = kFp8 ? scale_inv[(n0 / kFp8BlockSize) * scale_cols + k0 / kFp8BlockSize] : 1.f;
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[mi][ni][e] += part[mi][ni][e] * s;
            part[mi][ni][e] = 0.f;
          }
    }
  }
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t t = t0 + wm + mi * 16 + g + (e >= 2 ? 8 : 0);
        const int64_t n = n0 + wn + ni * 8 + 2 * c + (e & 1);
        if (t < rows && n < N) {
          __nv_bfloat16* dst = y + t * ldy + n;
          const float prior = beta != 0.f ? beta * __bfloat162float(*dst) : 0.f;
          *dst = __float2bfloat16(acc[mi][ni][e] + prior);
        }
      }
}

}  // namespace ds::kernels::gemm_tile
