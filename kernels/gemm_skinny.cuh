// The weight-streaming GEMM for few tokens (T <= 64): y[T, N] = x[T, K] · W[N, K]ᵀ where reading W
// once is the whole cost. Internal to gemm.cu (GemmRunner picks it per shape, see gemm.h).
//
// A 128-thread block owns 64 weight rows (4 warps × one m16 tile) and every token (padded to n8
// tiles) over one K range, so W is read exactly once and x (small) from L2. Weights and x stream
// through a Config::kStages-deep cp.async ring of 128-wide k-steps in shared memory; MMAs are
// mma.m16n8k16 BF16 with fp32 accumulation, W as the A operand (rows = outputs), x as B.
//
// Few output rows leave most SMs idle, so K is split over gridDim.y blocks (split-K): each writes
// its fp32 partial [split][N][T] to a workspace and the last block of a row tile to finish (a
// self-resetting counter per tile) adds the partials in split order and writes y, so the result is
// deterministic.
//
// Block-FP8 weights (E4M3 with 128×128 fp32 scales, see gemm.h) stream as bytes and are widened to
// BF16 while the A fragments are built (exact: every E4M3 value is a BF16 value); a 64×128 stage
// lies inside one scale block, so each stage's products accumulate unscaled and are added times
// that block's scale. Activations stay BF16 (W8A16): no activation rounding.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "kernels/attention_mma.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/gemm.h"

namespace ds::kernels::skinny {

constexpr int kRows = 64;         // weight rows (outputs) per block
constexpr int kBK = 128;          // k per stage: 256 contiguous bytes of each BF16 weight row
constexpr int kChunks = kBK / 8;  // 16-byte BF16 chunks per stage row
constexpr int kThreads = 128;
constexpr int kMaxTokens = 64;
constexpr int kFp8RowBytes = kBK + 16;  // FP8 stage rows padded so a fragment's 8 rows hit 8 banks

struct Params {
  const __nv_bfloat16* x;
  int64_t ldx;
  const void* w;           // [N, K] BF16 or E4M3
  const float* scale_inv;  // FP8: [ceil(N/128), ceil(K/128)]
  void* y;                 // [T, N] (row stride ldy), BF16 or fp32
  int64_t ldy;
  int T;
  int64_t N, K;
  bool out_f32;
  int splits;
  float* partial;      // [splits][N][T] when splits > 1
  unsigned* counters;  // [ceil(N/64)], zero between calls
};

// Per (weight type, n8 token tiles): stages deep enough to keep ~48 KB of weights in flight per SM
// at two blocks per SM (at most ~100 KB of shared memory per block), and the shared-memory layout.
template <typename WeightT, int kNT>
struct Config {
  static constexpr bool kFp8 = sizeof(WeightT) == 1;
  static constexpr int kStages = kFp8 ? (kNT <= 2 ? 6 : 4) : (kNT <= 2 ? 4 : 3);
  static constexpr int kTokenRows = kNT < 2 ? 16 : 8 * kNT;  // B fragments load n8 tiles in pairs
  static constexpr int kWStageBytes = kFp8 ? kRows * kFp8RowBytes : kRows * kBK * 2;
  static constexpr int kXStageBytes = kTokenRows * kBK * 2;
  static constexpr size_t kSmemBytes = size_t(kStages) * (kWStageBytes + kXStageBytes);
};

__device__ __forceinline__ void store_output(const Params& p, int t, int64_t n, float v) {
  if (p.out_f32) {
    static_cast<float*>(p.y)[t * p.ldy + n] = v;
  } else {
    static_cast<__nv_bfloat16*>(p.y)[t * p.ldy + n] = __float2bfloat16(v);
  }
}

// Two E4M3 bytes (low byte first) as a BF16 pair, exactly.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint16_t pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair), __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  return mma::pack_bf16x2(f.x, f.y);
}

template <typename WeightT, int kNT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(Params p) {
  using C = Config<WeightT, kNT>;
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t* w_smem = smem;                                   // [kStages][kWStageBytes]
  uint4* x_smem = reinterpret_cast<uint4*>(smem + C::kStages * C::kWStageBytes);  // [kStages][rows · kChunks]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n0 = int64_t(blockIdx.x) * kRows;
  const int split = blockIdx.y;
  const int64_t all_stages = p.K / kBK;
  const int64_t first = all_stages * split / p.splits;
  const int num = int(all_stages * (split + 1) / p.splits - first);
  const WeightT* w = static_cast<const WeightT*>(p.w);

  auto load_stage = [&](int i) {
    const int buf = i % C::kStages;
    const int64_t k0 = (first + i) * kBK;
    uint8_t* wst = w_smem + buf * C::kWStageBytes;
    constexpr int kWChunksPerRow = C::kFp8 ? kBK / 16 : kChunks;
    for (int c = tid; c < kRows * kWChunksPerRow; c += kThreads) {
      const int r = c / kWChunksPerRow, ch = c % kWChunksPerRow;
      const bool valid = n0 + r < p.N;
      const uint8_t* src = reinterpret_cast<const uint8_t*>(w + (valid ? n0 + r : 0) * p.K + k0) + ch * 16;
      void* dst = C::kFp8 ? static_cast<void*>(wst + r * kFp8RowBytes + ch * 16)
                          : static_cast<void*>(reinterpret_cast<uint4*>(wst) + mma::swizzled_chunk(r, ch, kChunks));
      mma::cp_async_16(dst, src, valid);
    }
    uint4* xst = x_smem + buf * C::kTokenRows * kChunks;
    for (int c = tid; c < C::kTokenRows * kChunks; c += kThreads) {
      const int r = c / kChunks, ch = c % kChunks;
      const bool valid = r < p.T;
      mma::cp_async_16(&xst[mma::swizzled_chunk(r, ch, kChunks)], p.x + (valid ? r : 0) * p.ldx + k0 + ch * 8, valid);
    }
  };

  // A fragment of this warp's 16 weight rows at k-step kk (16 wide) of stage buffer `buf`.
  const int g = lane >> 2, c4 = lane & 3;
  auto a_fragment = [&](int buf, int kk, uint32_t (&a)[4]) {
    const uint8_t* wst = w_smem + buf * C::kWStageBytes;
    if constexpr (C::kFp8) {
      const uint8_t* lo = wst + (warp * 16 + g) * kFp8RowBytes + kk * 16 + 2 * c4;
      const uint8_t* hi = lo + 8 * kFp8RowBytes;
      a[0] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(lo));
      a[1] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(hi));
      a[2] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(lo + 8));
      a[3] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(hi + 8));
    } else {
      mma::ldmatrix_x4(a, reinterpret_cast<const uint4*>(wst) + mma::a_fragment_chunk(lane, warp * 16, 2 * kk, kChunks));
    }
  };
  // sum += this warp's 16 rows × all tokens over stage buffer `buf`.
  auto mma_stage = [&](int buf, float (&sum)[kNT][4]) {
    const uint4* xst = x_smem + buf * C::kTokenRows * kChunks;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t a[4];
      a_fragment(buf, kk, a);
#pragma unroll
      for (int j = 0; j < kNT; j += 2) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, &xst[mma::b_fragment_chunk(lane, j * 8, 2 * kk, kChunks)]);
        mma::mma_bf16(sum[j], a, b[0], b[1]);
        if (j + 1 < kNT) mma::mma_bf16(sum[j + 1], a, b[2], b[3]);
      }
    }
  };

  float acc[kNT][4] = {};
  const int64_t scale_cols = (p.K + kFp8BlockSize - 1) / kFp8BlockSize;
#pragma unroll
  for (int i = 0; i < C::kStages - 1; ++i) {
    if (i < num) load_stage(i);
    mma::cp_async_commit();
  }
  for (int i = 0; i < num; ++i) {
    mma::cp_async_wait<C::kStages - 2>();
    __syncthreads();  // stage i has landed for every thread; stage i-1's buffer is free
    if (i + C::kStages - 1 < num) load_stage(i + C::kStages - 1);
    mma::cp_async_commit();
    const int buf = i % C::kStages;
    if constexpr (C::kFp8) {
      float part[kNT][4] = {};
      mma_stage(buf, part);
      const float scale = p.scale_inv[(n0 / kFp8BlockSize) * scale_cols + (first + i) * kBK / kFp8BlockSize];
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] += scale * part[j][e];
      }
    } else {
      mma_stage(buf, acc);
    }
  }

  // C fragment of n8 tile j: (row g, tokens 8j + 2c4, +1) in e = 0, 1 and row g + 8 in e = 2, 3.
  auto for_each_output = [&](auto&& f) {
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t n = n0 + warp * 16 + g + (e >> 1) * 8;
        const int t = j * 8 + 2 * c4 + (e & 1);
        if (t < p.T && n < p.N) f(t, n, acc[j][e]);
      }
    }
  };
  if (p.splits == 1) {
    for_each_output([&](int t, int64_t n, float v) { store_output(p, t, n, v); });
    return;
  }
  for_each_output([&](int t, int64_t n, float v) { p.partial[(int64_t(split) * p.N + n) * p.T + t] = v; });
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (tid == 0) last = atomicAdd(&p.counters[blockIdx.x], 1u) == unsigned(p.splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = int(std::min<int64_t>(kRows, p.N - n0));
  for (int i = tid; i < rows * p.T; i += kThreads) {
    const int64_t n = n0 + i / p.T;
    const int t = i % p.T;
    float v = 0.f;
    for (int s = 0; s < p.splits; ++s) v += __ldcg(&p.partial[(int64_t(s) * p.N + n) * p.T + t]);
    store_output(p, t, n, v);
  }
  if (tid == 0) p.counters[blockIdx.x] = 0;
}

// Whether the kernel takes these operands: 1 <= T <= 64, K a multiple of 128, x rows 16-byte
// aligned, W 16-byte (BF16) or 8-byte (FP8) aligned. (A 64-row tile never straddles a 128-row FP8
// scale block: tiles start at multiples of 64.)
inline bool supports(int64_t T, int64_t K, int64_t ldx, const void* x, const void* w, bool fp8) {
  const auto aligned = [](const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; };
  return T >= 1 && T <= kMaxTokens && K % kBK == 0 && ldx % 8 == 0 && aligned(x, 16) && aligned(w, fp8 ? 8 : 16);
}

// Splits of K: about two blocks per SM in all (so every SM streams the same share), each split at
// least two stages, and the partials within `workspace_bytes`.
inline int choose_splits(int64_t T, int64_t N, int64_t K, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + kRows - 1) / kRows;
  int64_t splits = std::min<int64_t>((2 * sms + tiles / 2) / tiles, K / kBK / 2);
  while (splits > 1 && size_t(splits * T * N) * sizeof(float) > workspace_bytes) --splits;
  return int(std::max<int64_t>(splits, 1));
}

template <typename WeightT, int kNT>
void launch_tiles(const Params& p, cudaStream_t stream) {
  auto kernel = skinny_gemm_kernel<WeightT, kNT>;
  const size_t smem = Config<WeightT, kNT>::kSmemBytes;
  cuda_utils::allow_shared_memory<skinny_gemm_kernel<WeightT, kNT>>(smem, "skinny GEMM");
  const dim3 grid(unsigned((p.N + kRows - 1) / kRows), unsigned(p.splits));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  cuda_utils::check_launch("skinny GEMM");
}

// Runs p (splits, partial and counters set by the caller) with n8 token tiles for p.T.
template <typename WeightT>
void launch(const Params& p, cudaStream_t stream) {
  if (p.T <= 8) {
    launch_tiles<WeightT, 1>(p, stream);
  } else if (p.T <= 16) {
    launch_tiles<WeightT, 2>(p, stream);
  } else if (p.T <= 32) {
    launch_tiles<WeightT, 4>(p, stream);
  } else {
    launch_tiles<WeightT, 8>(p, stream);
  }
}

}  // namespace ds::kernels::skinny
