// The weight-streaming GEMM for few tokens (T <= 64): y[T, N] = x[T, K] · W[N, K]ᵀ where reading W
// once is the whole cost. Internal to gemm.cu (GemmRunner picks it per shape, see gemm.h).
//
// A block owns 64 weight rows and every token (padded to n8 tiles) over one K range, so W is read
// exactly once and x (small) from L2. MMAs are mma.m16n8k16 BF16 with fp32 accumulation, W as the
// A operand (rows = outputs), x as B.
//
// The block's K range is read as streams (4, or 2 where x is too large for 4 rings), each one step
// at a time: a 128-byte line of each of the 64 rows (64 BF16 or 128 FP8 weights), interleaved so
// the streams together read 256–512 contiguous bytes per row. Each stream has its own cp.async ring
// and its own warps (32 or 16 rows each), which meet at a named barrier per step; the whole block
// meets only at the end, where the streams' sums are added in shared memory. One 256-thread block
// per SM with ~200 KB of rings keeps 48–160 KB of weights in flight per SM.
//
// The kernel is a programmatic dependent launch: it starts streaming weights while the kernel
// before it is still finishing and waits for that kernel only before it reads x. Each row tile is
// by default one block over all of K (no split-K) unless there are too few tiles to feed the SMs:
// measured on the H100, fewer blocks that each stream longer mostly beat split-K, whose fixup
// lengthens the kernel's tail, and SMs left free start the next GEMM early.
//
// Block-FP8 weights (E4M3 with 128×128 fp32 scales, see gemm.h; W8A16): bytes are widened to BF16
// (exactly) while the A fragments are built; a step (128 k of 64 rows) lies inside one scale block,
// so its products accumulate unscaled and are added times that block's scale. Activations stay
// BF16, unrounded.
//
// Split-K (few tiles): each block writes its fp32 partial [split][T][N] to a workspace and the last
// block of a row tile to finish (a self-resetting counter per tile) adds the partials in split
// order and writes y, so the result is deterministic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention_mma.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/gemm.h"

namespace ds::kernels::skinny {

constexpr int kRows = 64;  // weight rows (outputs) per block
constexpr int kMaxTokens = 64;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowBytes = 128;  // bytes of each weight row per stream step
constexpr int kSmemBudget = 216 * 1024;

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
  float* partial;      // [splits][T][N] when splits > 1
  unsigned* counters;  // [ceil(N/64)], zero between calls
};

// Per weight type and n8 token tiles: the streams (4, else 2 where 4 would leave fewer than 3
// steps per ring), ring depth and the shared-memory layout of a step.
template <typename WeightT, int kNT>
struct Config {
  static constexpr bool kFp8 = sizeof(WeightT) == 1;
  static constexpr int kStepK = kRowBytes / int(sizeof(WeightT));
  // BF16 W rows are XOR-swizzled 16-byte chunks (ldmatrix); FP8 rows, read 2 bytes at a time, are
  // padded by 16 bytes so a fragment's 8 rows start in 8 different bank groups.
  static constexpr int kWRowStride = kFp8 ? kRowBytes + 16 : kRowBytes;
  static constexpr int kWBytes = kRows * kWRowStride;
  static constexpr int kXChunks = kStepK * 2 / 16;  // 16-byte chunks of a BF16 x row per step
  static constexpr int kTokenRows = 8 * kNT;
  static constexpr int kStepBytes = kWBytes + kTokenRows * kXChunks * 16;
  static constexpr int kStreams = kSmemBudget / 4 / kStepBytes >= 3 ? 4 : 2;
  static constexpr int kWarpsPerStream = kWarps / kStreams;
  static constexpr int kStreamThreads = 32 * kWarpsPerStream;
  static constexpr int kWarpTiles = kRows / 16 / kWarpsPerStream;  // m16 tiles of weight rows per warp
  static constexpr int kStages = kSmemBudget / kStreams / kStepBytes;
  static constexpr int kRedStride = kRows + 4;  // fp32 row of the final reduction, padded against conflicts
  static constexpr size_t kSmemBytes = size_t(kStreams) * kStages * kStepBytes;
  static_assert(kStages >= 3, "the ring needs two steps in flight while one is computed");
  static_assert(size_t(kStreams) * kTokenRows * kRedStride * 4 <= kSmemBytes, "reduction fits in the ring");
};

__device__ __forceinline__ void store_output(const Params& p, int t, int64_t n, float v) {
  if (p.out_f32) {
    static_cast<float*>(p.y)[t * p.ldy + n] = v;
  } else {
    static_cast<__nv_bfloat16*>(p.y)[t * p.ldy + n] = __float2bfloat16(v);
  }
}

// Called by every thread of a block after it has written its partial sums (split-K): the last
// block of the row tile to get here adds all splits' partials in split order and writes y.
__device__ inline void finish_split_k(const Params& p, int64_t n0) {
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(&p.counters[blockIdx.x], 1u) == unsigned(p.splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = int(std::min<int64_t>(kRows, p.N - n0));
  for (int i = threadIdx.x; i < rows * p.T; i += blockDim.x) {
    const int t = i / rows;
    const int64_t n = n0 + i % rows;
    float v = 0.f;
    for (int s = 0; s < p.splits; ++s) v += __ldcg(&p.partial[(int64_t(s) * p.T + t) * p.N + n]);
    store_output(p, t, n, v);
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
}

// The warps of stream `stream` meet (named barrier 1 + stream; 0 is __syncthreads).
__device__ __forceinline__ void sync_stream(int stream, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(1 + stream), "r"(threads));
}

// Two E4M3 bytes (low byte first) as a BF16 pair, exactly.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(const uint8_t* bytes) {
  const auto pair = *reinterpret_cast<const __nv_fp8x2_storage_t*>(bytes);
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  return mma::pack_bf16x2(f.x, f.y);
}

template <typename WeightT, int kNT>
__global__ void __launch_bounds__(kThreads, 1) skinny_gemm_kernel(Params p) {
  using C = Config<WeightT, kNT>;
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int stream = warp / C::kWarpsPerStream, part = warp % C::kWarpsPerStream;
  const int stream_tid = tid % C::kStreamThreads;
  const int64_t n0 = int64_t(blockIdx.x) * kRows;
  const int64_t all_steps = p.K / C::kStepK;
  const int64_t first = all_steps * blockIdx.y / p.splits;
  const int64_t steps = all_steps * (blockIdx.y + 1) / p.splits - first;
  const int num = stream < steps ? int((steps - stream + C::kStreams - 1) / C::kStreams) : 0;  // this stream's
  uint8_t* ring = smem + stream * C::kStages * C::kStepBytes;
  const uint8_t* w = static_cast<const uint8_t*>(p.w);

  // Step j of a stream is block step stream + kStreams·j, in ring slot j % kStages: W [64 rows]
  // then x [kTokenRows][kStepK] as swizzled 16-byte chunks. The stream's warps load it together.
  auto k_of = [&](int j) { return (first + stream + int64_t(C::kStreams) * j) * C::kStepK; };
  auto slot = [&](int j) { return ring + (j % C::kStages) * C::kStepBytes; };
  auto load_w = [&](int j) {
    const int64_t k0 = k_of(j);
    uint8_t* dst = slot(j);
#pragma unroll
    for (int i = 0; i < kRows * (kRowBytes / 16) / C::kStreamThreads; ++i) {
      const int c = stream_tid + C::kStreamThreads * i, r = c / (kRowBytes / 16), ch = c % (kRowBytes / 16);
      const bool valid = n0 + r < p.N;
      const uint8_t* src = w + ((valid ? n0 + r : 0) * p.K + k0) * int64_t(sizeof(WeightT)) + ch * 16;
      const int offset = C::kFp8 ? r * C::kWRowStride + ch * 16 : 16 * mma::swizzled_chunk(r, ch, kRowBytes / 16);
      mma::cp_async_16(dst + offset, src, valid);
    }
  };
  auto load_x = [&](int j) {
    const int64_t k0 = k_of(j);
    uint4* dst = reinterpret_cast<uint4*>(slot(j) + C::kWBytes);
    for (int c = stream_tid; c < C::kTokenRows * C::kXChunks; c += C::kStreamThreads) {
      const int r = c / C::kXChunks, ch = c % C::kXChunks;
      const bool valid = r < p.T;
      mma::cp_async_16(dst + mma::swizzled_chunk(r, ch, C::kXChunks), p.x + (valid ? r : 0) * p.ldx + k0 + ch * 8,
                       valid);
    }
  };

  // A fragment of m16 tile mt (of this warp's kWarpTiles) at 16-wide k-step kk of a step's W.
  const int g = lane >> 2, c4 = lane & 3;
  auto a_fragment = [&](const uint8_t* w_step, int mt, int kk, uint32_t(&a)[4]) {
    const int row0 = (part * C::kWarpTiles + mt) * 16;
    if constexpr (C::kFp8) {
      const uint8_t* lo = w_step + (row0 + g) * C::kWRowStride + kk * 16 + 2 * c4;
      const uint8_t* hi = lo + 8 * C::kWRowStride;
      a[0] = fp8x2_to_bf16x2(lo);
      a[1] = fp8x2_to_bf16x2(hi);
      a[2] = fp8x2_to_bf16x2(lo + 8);
      a[3] = fp8x2_to_bf16x2(hi + 8);
    } else {
      mma::ldmatrix_x4(a, w_step + 16 * mma::a_fragment_chunk(lane, row0, 2 * kk, kRowBytes / 16));
    }
  };
  // sum += this warp's rows × all tokens over step j.
  auto mma_step = [&](int j, float(&sum)[C::kWarpTiles][kNT][4]) {
    const uint8_t* w_step = slot(j);
    const uint32_t x_addr = mma::smem_address(w_step + C::kWBytes);
#pragma unroll
    for (int kk = 0; kk < C::kStepK / 16; ++kk) {
      uint32_t a[C::kWarpTiles][4], b[kNT][2];
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) a_fragment(w_step, mt, kk, a[mt]);
      if constexpr (kNT == 1) {
        mma::ldmatrix_x2(b[0], x_addr + 16 * mma::swizzled_chunk(lane & 7, 2 * kk + ((lane >> 3) & 1), C::kXChunks));
      } else {
#pragma unroll
        for (int jt = 0; jt < kNT; jt += 2) {
          uint32_t r[4];
          mma::ldmatrix_x4(r, x_addr + 16 * mma::b_fragment_chunk(lane, jt * 8, 2 * kk, C::kXChunks));
          b[jt][0] = r[0], b[jt][1] = r[1], b[jt + 1][0] = r[2], b[jt + 1][1] = r[3];
        }
      }
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
        for (int jt = 0; jt < kNT; ++jt) mma::mma_bf16(sum[mt][jt], a[mt], b[jt][0], b[jt][1]);
      }
    }
  };

  float acc[C::kWarpTiles][kNT][4] = {};
  const int64_t scale_cols = (p.K + kFp8BlockSize - 1) / kFp8BlockSize;
  auto compute = [&](int j) {
    if constexpr (C::kFp8) {
      float step_sum[C::kWarpTiles][kNT][4] = {};
      mma_step(j, step_sum);
      const float scale = p.scale_inv[(n0 / kFp8BlockSize) * scale_cols + k_of(j) / kFp8BlockSize];
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
        for (int jt = 0; jt < kNT; ++jt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][jt][e] += scale * step_sum[mt][jt][e];
        }
      }
    } else {
      mma_step(j, acc);
    }
  };

  // Weights first: no earlier kernel writes them, so they stream while that kernel finishes.
#pragma unroll
  for (int j = 0; j < C::kStages - 1; ++j) {
    if (j < num) load_w(j);
    mma::cp_async_commit();
  }
  cuda_utils::allow_dependent_launch();
  cuda_utils::wait_for_previous_grids();
#pragma unroll
  for (int j = 0; j < C::kStages - 1; ++j) {
    if (j < num) load_x(j);
  }
  mma::cp_async_commit();
  for (int j = 0; j < num; ++j) {
    // Groups so far: W of steps 0..S-2, x of those, then one (W + x) per iteration. Step j's data
    // is complete once at most min(j, S-2) newer groups are pending.
    mma::cp_async_wait_at_most<C::kStages - 2>(j);
    sync_stream(stream, C::kStreamThreads);  // all of step j landed; every warp is done with step j-1
    if (j + C::kStages - 1 < num) {
      load_w(j + C::kStages - 1);
      load_x(j + C::kStages - 1);
    }
    mma::cp_async_commit();
    compute(j);
  }
  mma::cp_async_wait<0>();
  __syncthreads();  // every stream is done with its ring: reuse it for the reduction

  // C fragment (mt, jt): row (part·kWarpTiles + mt)·16 + g (+8 in e = 2, 3), token 8jt + 2c (+1 in
  // odd e).
  float* red = reinterpret_cast<float*>(smem);  // [stream][token][row]
#pragma unroll
  for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
    for (int jt = 0; jt < kNT; ++jt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = (part * C::kWarpTiles + mt) * 16 + g + (e >> 1) * 8, t = jt * 8 + 2 * c4 + (e & 1);
        red[(stream * C::kTokenRows + t) * C::kRedStride + row] = acc[mt][jt][e];
      }
    }
  }
  __syncthreads();
  const int rows = int(std::min<int64_t>(kRows, p.N - n0));
  for (int i = tid; i < p.T * kRows; i += kThreads) {
    const int t = i / kRows, row = i % kRows;
    if (row >= rows) continue;
    float v = 0.f;
#pragma unroll
    for (int s = 0; s < C::kStreams; ++s) v += red[(s * C::kTokenRows + t) * C::kRedStride + row];
    if (p.splits == 1) {
      store_output(p, t, n0 + row, v);
    } else {
      p.partial[(int64_t(blockIdx.y) * p.T + t) * p.N + n0 + row] = v;
    }
  }
  if (p.splits > 1) finish_split_k(p, n0);
}

// Whether the kernel takes these operands: 1 <= T <= 64, K a multiple of 128, x rows 16-byte
// aligned, W 16-byte aligned. (A 64-row tile never straddles a 128-row FP8 scale block: tiles
// start at multiples of 64.)
inline bool supports(int64_t T, int64_t K, int64_t ldx, const void* x, const void* w) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return T >= 1 && T <= kMaxTokens && K % 128 == 0 && ldx % 8 == 0 && aligned(x) && aligned(w);
}

// Splits of K: "many" gives about one block per SM where there are fewer row tiles than SMs (1
// otherwise), each split covering at least 512 of K and the partials fitting `workspace_bytes`.
inline int many_splits(int64_t T, int64_t N, int64_t K, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + kRows - 1) / kRows;
  int64_t many = std::min<int64_t>((sms + tiles - 1) / tiles, K / 512);
  while (many > 1 && size_t(many * T * N) * sizeof(float) > workspace_bytes) --many;
  return int(std::max<int64_t>(many, 1));
}

// The default: one split (each row tile streams all of K) unless there are fewer tiles than a
// quarter of the SMs, then many_splits (measured on the H100: one split wins from ~64 tiles on,
// except for some long-K shapes). Called per GEMM, so it allocates nothing.
inline int default_splits(int64_t T, int64_t N, int64_t K, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + kRows - 1) / kRows;
  return 4 * tiles >= sms ? 1 : many_splits(T, N, K, sms, workspace_bytes);
}

// Splits worth timing (the autotune), the default first: one and many_splits.
inline std::vector<int> split_candidates(int64_t T, int64_t N, int64_t K, int sms, size_t workspace_bytes) {
  const int first = default_splits(T, N, K, sms, workspace_bytes);
  const int other = first == 1 ? many_splits(T, N, K, sms, workspace_bytes) : 1;
  return other == first ? std::vector<int>{first} : std::vector<int>{first, other};
}

template <typename WeightT, int kNT>
void launch_tiles(const Params& p, cudaStream_t stream) {
  constexpr auto kernel = skinny_gemm_kernel<WeightT, kNT>;
  constexpr size_t smem = Config<WeightT, kNT>::kSmemBytes;
  cuda_utils::allow_shared_memory<kernel>(smem, "skinny GEMM");
  const dim3 grid(unsigned((p.N + kRows - 1) / kRows), unsigned(p.splits));
  cuda_utils::launch_programmatic(kernel, grid, dim3(kThreads), smem, stream, "skinny GEMM", p);
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
