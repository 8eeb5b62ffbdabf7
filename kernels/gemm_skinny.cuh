// The weight-streaming GEMM for few tokens (T <= 64): y[T, N] = x[T, K] · W[N, K]ᵀ where reading W
// once is the whole cost. Internal to gemm.cu (GemmRunner picks it per shape, see gemm.h; and
// grouped_skinny_gemm, the experts of a small MoE batch in one launch).
//
// A block owns 64 weight rows (32/48/128, W8A8 also 80/96, as alternatives, see tilings) and every
// token (padded to n8 tiles) over one K range, so W is read exactly once and x (small) from L2.
// MMAs are BF16 with fp32 accumulation, W as the A operand (rows = outputs), x as B: mma.m16n8k16
// from registers for one n8 token tile and for W8A16, and for BF16 with more tokens (and W8A8,
// below) wgmma m64nN on the ring's shared memory (measured on the H100 at T = 64: 4096×4096 22.6 ->
// 17.3 µs, 9B q_proj 27.6 -> 26.3, ahead of cuBLASLt's 27.8; the mma.sync form was bound by its
// ldmatrix traffic: x as large as W, read by every warp).
//
// The block's K range is read as streams (4, or 2 where a step is too large for 4 rings; 3 for
// W8A8's swapped tiles), each one step at a time: a 128-byte line of each of the block's rows (64
// BF16 or 128 FP8 weights), interleaved so the streams together read 256–512 contiguous bytes per
// row. Each stream has its own cp.async ring and its own warps (16 or 32 rows each), which meet at
// a named barrier per step; the whole block meets only at the end, where the streams' sums are
// added in shared memory. One block per SM (T <= 8: a warp per m16 tile of each stream, 512 threads
// for 64 rows; more tokens: a warpgroup per stream (BF16, 512 threads) or 256 threads (W8A16);
// W8A8: a warpgroup per m64 tile of each stream) with ~200 KB of rings keeps 48–160 KB of weights
// in flight per SM (grouped launches whose blocks outnumber the SMs: two blocks per SM, each with
// half of that; Params::two_per_sm).
// A thread loads the same chunks of every step (addresses computed once), x only for the T real
// tokens (the padding rows of the ring are zeroed once).
//
// The kernel is a programmatic dependent launch: it starts streaming weights while the kernel
// before it is still finishing and waits for that kernel only before it reads x (grouped blocks
// wait first: the routing kernel before tells them their expert). Each row tile is
// by default one block over all of K (no split-K) unless there are too few tiles to feed the SMs:
// measured on the H100, fewer blocks that each stream longer mostly beat split-K, whose fixup
// lengthens the kernel's tail, and SMs left free start the next GEMM early.
//
// Block-FP8 weights (E4M3 with 128×128 fp32 scales, see gemm.h; W8A16): bytes become BF16 by
// moving bits with integer ops (no conversion unit, see e4m3x4_to_bf16), which reads each weight
// times 2^-120; x is multiplied by 2^64 (exact), so products sit near 2^-56 of their true value,
// far from fp32's subnormals; a step (128 k of 64 rows) lies inside one scale block, so its
// products accumulate unscaled and are added times 2^56 and that block's scale. Activations stay
// BF16, unrounded.
//
// W8A8 (block-FP8 weights, x quantized per token and 128-group by the kernel that
// cuBLASLt's W8A8 path uses, launched just before and programmatically, so the weights stream while
// it runs): E4M3 wgmma m64nNk32 on the ring as it lies, each 128-k step (one scale block of W, one
// group of each token) into its own accumulator, added times the two scales. Measured on the H100
// against the W8A16 form (mma.sync, x through ldmatrix) and cuBLASLt W8A8: 9B q_proj at T = 64 17.4
// µs vs 30.2 and 19.5, 9B gate_up at T = 16 38.9 vs 46.6 and 45.5. W8A8 tiles of 80 or 96 rows
// (kSwappedRows) swap the operands: x's 64 token rows (zero-padded) are the m64 A operand and the
// tile's weight rows B (n = 80 or 96), so the tiles can match the SM count where whole m64 tiles
// cannot (9B in_proj: 129 tiles of 96 rows on 132 SMs, where 128-row tiles leave 35 SMs idle).
//
// Split-K (few tiles): each block writes its fp32 partial [split][T][N] to a workspace and the last
// block of a row tile to finish (a self-resetting counter per tile) adds the partials in split
// order and writes y, so the result is deterministic.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention_mma.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/gemm.h"
#include "kernels/wgmma.cuh"

namespace ds::kernels::skinny {

constexpr int kRows = 64;  // weight rows (outputs) per block; 32, 48 (BF16) or 128 (FP8) as alternatives for T <= 8
// W8A8 tile heights with x as the wgmma's A operand and W as its B (see Config::kSwapAB).
constexpr int kSwappedRows[] = {80, 96};
constexpr bool is_swapped_rows(int tile_rows) { return tile_rows == kSwappedRows[0] || tile_rows == kSwappedRows[1]; }
constexpr int kMaxTokens = 64;
static_assert(kMaxTokens == kFp8RowsMaxTokens, "Fp8Rows are sized for the W8A8 skinny kernel's steps");
constexpr int kRowBytes = 128;  // bytes of each weight row per stream step
constexpr int kSmemBudget = 216 * 1024;
// Two blocks per SM (grouped launches of more blocks than SMs, see Params::two_per_sm): each gets a
// ring that two fit beside each other (228 KB per SM, 1 KB reserved per block).
constexpr int kPairedSmemBudget = 110 * 1024;

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
  int tile_rows;  // kRows, 32, 48 or 128 (see has_tile_rows); W8A8 also kSwappedRows (see supports_w8a8)
  int splits;
  float* partial = nullptr;      // [splits][T][N] when splits > 1
  unsigned* counters = nullptr;  // [ceil(N/tile_rows)], zero between calls
  // Grouped (the experts of a small MoE batch, one launch; splits 1; see ExpertGroups in gemm.h):
  // blockIdx.y is a slot of active_experts (-1: none), w and scale_inv hold one matrix per expert
  // back to back (expert extra_expert's is extra_w, extra_scale_inv), y rows are sorted by expert
  // (expert e's are [row_offsets[e], row_offsets[e+1]), at most T), and so are x's, or sorted row r
  // reads x row x_rows[r]. The routing kernel before writes these, so a grouped block waits for it
  // before it streams weights.
  const int32_t* active_experts = nullptr;
  const int32_t* row_offsets = nullptr;
  const int32_t* x_rows = nullptr;
  int64_t extra_expert = -1;
  const void* extra_w = nullptr;
  const float* extra_scale_inv = nullptr;
  // Two blocks per SM, for grouped launches (BF16 up to 64 tokens, FP8 W8A16 up to 32) with more
  // blocks than SMs, which would otherwise take a second, mostly idle wave, or above 8 tokens dozens
  // of waves of short blocks: half the ring each; at T <= 8 half the warps (each with two m16
  // tiles), with wgmma (BF16 above 8 tokens) two streams.
  bool two_per_sm = false;
  // W8A8 (FP8 weights, 64-, 128-, 80- or 96-row tiles, not grouped): x quantized per token and 128-group by
  // quantize_fp8_kernel ([T][K] E4M3, scales [K/128][T]) is read instead of x.
  const uint8_t* xq = nullptr;
  const float* x_scales = nullptr;
};

using cuda::SkinnyTiling;

// The parameters of y[T, N] = x · Wᵀ as `tiling` covers it (no split-K workspace, not grouped).
inline Params make_params(const void* x, int64_t ldx, const void* w, const float* scale_inv, void* y, int64_t ldy,
                          int64_t T, int64_t N, int64_t K, bool out_f32, SkinnyTiling tiling) {
  Params p;
  p.x = static_cast<const __nv_bfloat16*>(x);
  p.ldx = ldx;
  p.w = w;
  p.scale_inv = scale_inv;
  p.y = y;
  p.ldy = ldy;
  p.T = int(T);
  p.N = N;
  p.K = K;
  p.out_f32 = out_f32;
  p.tile_rows = tiling.tile_rows;
  p.splits = tiling.splits;
  return p;
}

// Per weight type, n8 token tiles, rows per block and activation type (kXFp8: W8A8): the streams
// (4, else 2 where 4 would leave fewer than 3 steps per ring; swapped tiles 3), ring depth and the
// shared-memory layout of a step.
template <typename WeightT, int kNT, int kTileRows, bool kXFp8, int kBlocksPerSm = 1>
struct Config {
  static constexpr int kRows = kTileRows;
  static constexpr int kBudget = kBlocksPerSm == 1 ? kSmemBudget : kPairedSmemBudget;
  static constexpr bool kFp8 = sizeof(WeightT) == 1;
  static_assert(kFp8 || !kXFp8, "E4M3 activations go with E4M3 weights");
  // W8A8 tiles whose rows are not whole m64 tiles: x's 64 token rows are the wgmma's A operand (m64) and
  // the tile's weight rows its B (n = kRows), one warpgroup per stream; a tile may then straddle two
  // 128-row scale blocks of W, so a step carries both blocks' scales.
  static constexpr bool kSwapAB = kXFp8 && is_swapped_rows(kTileRows);
  static_assert(!kSwapAB || kNT == 8, "swapped operands: x's 64 token rows are one m64 tile");
  static constexpr int kAccN8 = kSwapAB ? kTileRows / 8 : kNT;  // n8 tiles of a warp's accumulators
  // W8A8, and BF16 with more than one n8 token tile: a warpgroup per stream runs wgmma m64n(8·kNT) on
  // the ring's W and x as they lie (see wgmma.cuh), so neither operand passes through registers.
  static constexpr bool kWgmma = kXFp8 || (!kFp8 && kNT > 1);
  static_assert(!kXFp8 || kWgmma, "W8A8 runs on wgmma only");
  static_assert(kBlocksPerSm == 1 || (kBlocksPerSm == 2 && kNT <= 8 && !kXFp8),
                "two blocks per SM: up to 64 tokens, not W8A8");
  static constexpr bool kWidenW = kFp8 && !kXFp8;  // W8A16: E4M3 weights widened to BF16 in registers
  static constexpr int kStepK = kRowBytes / int(sizeof(WeightT));
  static constexpr int kWBytes = kRows * kRowBytes;               // 16-byte chunks, swizzled (w_chunk)
  static constexpr int kXChunks = kStepK * (kXFp8 ? 1 : 2) / 16;  // 16-byte chunks of an x row per step
  static constexpr int kTokenRows = 8 * kNT;
  static constexpr int kScaleOffset = kWBytes + kTokenRows * kXChunks * 16;  // FP8: the step's weight scale
  static constexpr int kXScaleOffset = kScaleOffset + 16;                    // W8A8: the tokens' scales
  static constexpr int kStepData = kScaleOffset + (kFp8 ? 16 : 0) + (kXFp8 ? kTokenRows * 4 : 0);
  static constexpr int kStepBytes = kWgmma ? (kStepData + 1023) / 1024 * 1024 : kStepData;
  // Swapped tiles' 19-21 KB steps: 3 streams of 3 slots rather than 2 of 5 (measured on the H100 at
  // T = 64, "norm + FP8 rows" in a graph: 35B-A3B in_proj 13.0 -> 11.5 µs, 27B gate_up 77.7 -> 75.2,
  // 9B in_proj 22.3 -> 22.8).
  static constexpr int kStreams = kSwapAB ? 3 : kBudget / 4 / kStepBytes >= 3 ? 4 : 2;
  // One n8 token tile: a warp per m16 tile of each stream (8 warps per 32 rows), which hides the
  // per-step latencies, FP8's longer chains of widening and twice the MMAs per byte above all
  // (measured on the H100: FP8 9B in_proj 25.0 -> 23.1 µs, 27B mlp down 43 -> 38.5 with 16 warps
  // instead of 8; BF16 alike within noise; FP8's 128-row tiles: 2 streams of 8 warps, 5 steps deep).
  // More tokens: a warpgroup per stream (BF16, wgmma), or 8 warps (W8A16; registers). W8A8: a
  // warpgroup per m64 tile of each stream for any T (wgmma; see kWarpgroupsPerStream).
  // FP8 32-row tiles with one token tile also split each step's k in two halves between two warps (each with
  // its own sums, added in the final reduction; 16 warps in all): the widening makes a step's work long enough
  // that one warp per m16 tile delays the stream's next loads (measured on the H100: 9B mlp down 21.8 -> 20.9 µs
  // at T = 1, 24.7 -> 23.4 at T = 8; the same split with 64 rows, at 1024 threads or 2 streams, was slower).
  static constexpr int kKSplit = kWidenW && kNT == 1 && kRows == 32 ? 2 : 1;
  // W8A8 128-row tiles with more than one n8 token tile: a warpgroup per m64 tile of each stream, so a
  // step's two halves are multiplied side by side (measured on the H100 at T = 64, one warpgroup
  // doing both: 9B in_proj 25.6 -> 24.4 µs, lm_head 390.9 -> 375.6; at T <= 8, no gain).
  static constexpr int kWarpgroupsPerStream = kXFp8 && kNT > 1 && !kSwapAB ? kRows / 64 : 1;
  static constexpr int kThreads = kWgmma     ? 128 * kWarpgroupsPerStream * kStreams
                                  : kNT == 1 ? 32 * kStreams * kRows / 16 * kKSplit / kBlocksPerSm
                                             : 256;
  static constexpr int kWarpsPerStream = kThreads / 32 / kStreams;
  static constexpr int kStreamThreads = 32 * kWarpsPerStream;
  static constexpr int kRowWarps = kWarpsPerStream / kKSplit;             // warps of a stream splitting its rows
  static constexpr int kWarpTiles = kSwapAB ? 1 : kRows / 16 / kRowWarps;  // m16 tiles of weight rows per warp
  static constexpr int kRowsPerPass = kStreamThreads / (kRowBytes / 16);  // rows one pass of a stream's loads covers
  static constexpr int kSums = kStreams * kKSplit;                        // partial sums per output, reduced at the end
  static_assert((kSwapAB || kRows % (16 * kRowWarps) == 0) && kRows % kRowsPerPass == 0,
                "the warps and loads cover the rows");
  static_assert(
      !kWgmma || ((kRows == 64 || (kXFp8 && kRows == 128) || kSwapAB) && kWBytes % 1024 == 0),
      "wgmma: one m64 tile per warpgroup (W8A8: or two, or x's), every step's W and x on 1024-byte boundaries");
  static constexpr int kStages = kBudget / kStreams / kStepBytes;
  // fp32 row of the final reduction, padded against conflicts (swapped tiles' stores still meet 2-way ones)
  static constexpr int kRedStride = kRows + 4;
  static constexpr size_t kAlignSlack = kWgmma ? 1024 : 0;  // the ring is moved to a 1024-byte boundary
  static constexpr size_t kSmemBytes = size_t(kStreams) * kStages * kStepBytes + kAlignSlack;
  static_assert(kStages >= 3, "the ring needs two steps in flight while one is computed");
  static_assert(kWarpTiles >= 1, "every warp owns an m16 tile");
  static_assert(size_t(kSums) * kTokenRows * kRedStride * 4 <= kSmemBytes - kAlignSlack, "reduction fits in the ring");
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
__device__ inline void finish_split_k(const Params& p, int64_t n0, int tile_rows) {
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(&p.counters[blockIdx.x], 1u) == unsigned(p.splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  // Four adjacent outputs per thread where the partials' rows allow 16-byte loads: the kernel's tail
  // is this block's chain of L2 round trips, a quarter as long (measured on the H100 at T = 64, a
  // 64-row tile's 4096 outputs over 512 threads, W8A8 × 2 splits: 9B o_proj 16.0 -> 13.3 µs, mlp
  // down 27.1 -> 24.5, which made it the autotune's pick, 30.2 -> 27.3 in the decode sequence).
  const int rows = int(std::min<int64_t>(tile_rows, p.N - n0));
  const int width = rows % 4 == 0 && p.N % 4 == 0 ? 4 : 1;
  const int groups = rows / width;
  for (int i = threadIdx.x; i < groups * p.T; i += blockDim.x) {
    const int t = i / groups;
    const int64_t n = n0 + i % groups * width;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = 0; s < p.splits; ++s) {
      const float* src = &p.partial[(int64_t(s) * p.T + t) * p.N + n];
      if (width == 4) {
        const float4 part = __ldcg(reinterpret_cast<const float4*>(src));
        v.x += part.x, v.y += part.y, v.z += part.z, v.w += part.w;
      } else {
        v.x += __ldcg(src);
      }
    }
    const float sums[4] = {v.x, v.y, v.z, v.w};
    for (int e = 0; e < width; ++e) store_output(p, t, n + e, sums[e]);
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
}

// The warps of stream `stream` meet (named barrier 1 + stream; 0 is __syncthreads).
__device__ __forceinline__ void sync_stream(int stream, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(1 + stream), "r"(threads));
}

// Where chunk `chunk` (16 bytes) of row `row` of a step's W lies. BF16: the XOR swizzle ldmatrix
// and wgmma read (also W8A8). W8A16: chunk ^ 4(row & 1), so a quarter-warp's 16-byte loads (rows g
// and g + 1, chunks c4 or c4 + 4, see mma_step_fp8) hit 8 different bank groups.
template <bool kWidenW>
__device__ __forceinline__ int w_chunk(int row, int chunk) {
  return kWidenW ? row * (kRowBytes / 16) + (chunk ^ ((row & 1) << 2))
                 : mma::swizzled_chunk(row, chunk, kRowBytes / 16);
}

// Four E4M3 bytes (b0 lowest) as BF16 pairs lo = (b0, b1), hi = (b2, b3), each the byte's value
// times 2^-120, exactly: the sign goes to bit 15 and the 7 exponent-and-mantissa bits to bits 4..10,
// where BF16's 8-bit exponent (bias 127 against E4M3's 7) reads them as the same number scaled by
// 2^-120, subnormals included (E4M3's exponent 0 lands on BF16's). NaN bytes (0x7f, 0xff; absent
// from real checkpoints) come out finite. Integer ops only: the conversion unit was the bottleneck.
__device__ __forceinline__ void e4m3x4_to_bf16(uint32_t bytes, uint32_t& lo, uint32_t& hi) {
  const uint32_t spread_lo = __byte_perm(bytes, 0u, 0x1404), spread_hi = __byte_perm(bytes, 0u, 0x3424);
  lo = (spread_lo & 0x80008000u) | ((spread_lo >> 4) & 0x07f007f0u);
  hi = (spread_hi & 0x80008000u) | ((spread_hi >> 4) & 0x07f007f0u);
}

// x pair times 2^64 (exact for any BF16 activation below 2^63), so that products with the 2^-120
// weights stay normal fp32.
__device__ __forceinline__ uint32_t scale_x_for_fp8(uint32_t pair) {
  const __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&pair), __float2bfloat162_rn(0x1p64f));
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename WeightT, int kNT, int kTileRows, bool kXFp8, int kBlocksPerSm>
__global__ void __launch_bounds__(Config<WeightT, kNT, kTileRows, kXFp8, kBlocksPerSm>::kThreads, kBlocksPerSm)
    skinny_gemm_kernel(Params p) {
  using C = Config<WeightT, kNT, kTileRows, kXFp8, kBlocksPerSm>;
  constexpr int kRows = C::kRows;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  uint8_t* const smem = C::kWgmma ? smem_raw + (1024 - mma::smem_address(smem_raw) % 1024) % 1024 : smem_raw;
  const bool grouped = p.active_experts != nullptr;
  if (grouped) {  // this block's expert: its weights, scales and rows
    cuda_utils::wait_for_previous_grids();
    const int64_t e = p.active_experts[blockIdx.y];
    if (e < 0) return;
    const int64_t row0 = p.row_offsets[e];
    p.T = int(std::min<int64_t>(p.T, p.row_offsets[e + 1] - row0));  // never past the ring's token rows
    if (p.x_rows) {
      p.x_rows += row0;
    } else {
      p.x += row0 * p.ldx;
    }
    p.y = static_cast<uint8_t*>(p.y) + row0 * p.ldy * (p.out_f32 ? 4 : 2);
    if (e == p.extra_expert) {
      p.w = p.extra_w;
      p.scale_inv = p.extra_scale_inv;
    } else {
      p.w = static_cast<const WeightT*>(p.w) + e * p.N * p.K;
      if (C::kFp8) p.scale_inv += e * ((p.N + kFp8BlockSize - 1) / kFp8BlockSize) * (p.K / kFp8BlockSize);
    }
  }
  const int split = grouped ? 0 : int(blockIdx.y);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int stream = warp / C::kWarpsPerStream, part = warp % C::kRowWarps;  // part: which of the stream's rows
  const int k_part = warp % C::kWarpsPerStream / C::kRowWarps;               // FP8 T <= 8: which half of a step's k
  const int stream_tid = tid % C::kStreamThreads;
  const int64_t n0 = int64_t(blockIdx.x) * kRows;
  const int64_t all_steps = p.K / C::kStepK;
  const int64_t first = all_steps * split / p.splits;
  const int64_t steps = all_steps * (split + 1) / p.splits - first;
  const int num = stream < steps ? int((steps - stream + C::kStreams - 1) / C::kStreams) : 0;  // this stream's
  uint8_t* ring = smem + stream * C::kStages * C::kStepBytes;
  const uint8_t* w = static_cast<const uint8_t*>(p.w);

  // Step j of a stream is block step stream + kStreams·j, in ring slot j % kStages: W [kRows rows],
  // x [kTokenRows][kStepK] as swizzled 16-byte chunks, then (FP8) the step's scale. The stream's
  // warps load it together. A thread's share of a step is the same every step (W: chunk w_ch of
  // rows w_r0 + kRowsPerPass·i), so its addresses are computed once and advance by a constant.
  constexpr int kChunksPerRow = kRowBytes / 16;
  constexpr int kRowsPerPass = C::kRowsPerPass;
  constexpr int kWLoads = kRows / kRowsPerPass;
  const int w_ch = stream_tid % kChunksPerRow, w_r0 = stream_tid / kChunksPerRow;
  const int64_t row_bytes = p.K * int64_t(sizeof(WeightT));
  const int64_t first_k = (first + stream) * C::kStepK;
  const uint8_t* w_src = w + (n0 + w_r0) * row_bytes + first_k * int64_t(sizeof(WeightT)) + w_ch * 16;
  unsigned w_valid = 0;  // bit i: row w_r0 + kRowsPerPass·i exists (rows past N are zero-filled)
#pragma unroll
  for (int i = 0; i < kWLoads; ++i) w_valid |= unsigned(n0 + w_r0 + kRowsPerPass * i < p.N) << i;
  const float* scale_src =  // FP8: a step is one scale block (swapped: of the tile's first row)
      C::kFp8 ? p.scale_inv + (n0 / kFp8BlockSize) * (p.K / kFp8BlockSize) + first_k / kFp8BlockSize : nullptr;
  // Swapped: the scale block of the tile's last row (the same or the next), and the tile's first
  // column (weight row) in that next block (kRows or more: none; a multiple of 16, so an n8 column
  // tile never straddles blocks).
  const float* last_scale_src = nullptr;
  int second_block_col = kRows;
  if constexpr (C::kSwapAB) {
    const int64_t last_row_block = (std::min<int64_t>(n0 + kRows, p.N) - 1) / kFp8BlockSize;
    last_scale_src = scale_src + (last_row_block - n0 / kFp8BlockSize) * (p.K / kFp8BlockSize);
    second_block_col = kFp8BlockSize - int(n0 % kFp8BlockSize);
  }
  auto slot = [&](int j) { return ring + (j % C::kStages) * C::kStepBytes; };
  const int64_t w_pass_bytes = kRowsPerPass * row_bytes;
  auto load_w = [&](int j) {
    uint8_t* dst = slot(j);
    const uint8_t* src = w_src + int64_t(j) * (C::kStreams * kRowBytes);
#pragma unroll
    for (int i = 0; i < kWLoads; ++i, src += w_pass_bytes) {
      const bool valid = (w_valid >> i) & 1u;
      mma::cp_async_16(dst + 16 * w_chunk<C::kWidenW>(w_r0 + kRowsPerPass * i, w_ch), valid ? src : w, valid);
    }
    if (C::kFp8 && stream_tid == 0) mma::cp_async_4(dst + C::kScaleOffset, scale_src + j * C::kStreams);
    if (C::kSwapAB && stream_tid == 1) mma::cp_async_4(dst + C::kScaleOffset + 4, last_scale_src + j * C::kStreams);
  };
  // x rows of tokens t < T only (W8A8: and their scales); the padding rows were zeroed once
  // (zero_x_padding). A thread's x chunks are the same every step (chunk x_ch of token rows x_r0 +
  // kXRowsPerPass·i), so their source offsets are computed once (set_x_offsets, after the kernel
  // before, which may write x_rows, has finished; 32 bits: x holds at most a batch's tokens, T <= 64
  // or a small MoE batch's rows, far under 4 GB) and the per-step work
  // is one add and one load per chunk (measured on the H100, ncu at T = 64: ~450 instructions per
  // warp and step in the W8A8 96-row form, issue-bound).
  static_assert(C::kStreamThreads % C::kXChunks == 0, "a pass of the stream's threads covers whole x rows");
  constexpr int kXRowsPerPass = C::kStreamThreads / C::kXChunks;
  constexpr int kXLoads = (C::kTokenRows + kXRowsPerPass - 1) / kXRowsPerPass;
  const int x_ch = stream_tid % C::kXChunks, x_r0 = stream_tid / C::kXChunks;
  uint32_t x_src[kXLoads];
  unsigned x_valid = 0;  // bit i: row x_r0 + kXRowsPerPass·i is a token (< T)
  auto set_x_offsets = [&] {
    const int64_t src_row_bytes = kXFp8 ? p.K : p.ldx * 2;
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      const int r = x_r0 + kXRowsPerPass * i;
      const bool valid = r < p.T;
      x_valid |= unsigned(valid) << i;
      x_src[i] = valid ? uint32_t((p.x_rows ? p.x_rows[r] : r) * src_row_bytes + x_ch * 16) : 0u;
    }
  };
  auto load_x = [&](int j) {
    uint4* dst = reinterpret_cast<uint4*>(slot(j) + C::kWBytes);
    const int64_t k0 = first_k + int64_t(j) * (C::kStreams * C::kStepK);
    const uint8_t* src = kXFp8 ? p.xq + k0 : reinterpret_cast<const uint8_t*>(p.x + k0);
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      if ((x_valid >> i) & 1u) {
        mma::cp_async_16(dst + mma::swizzled_chunk(x_r0 + kXRowsPerPass * i, x_ch, C::kXChunks), src + x_src[i], true);
      }
    }
    if (kXFp8 && stream_tid < p.T) {
      mma::cp_async_4(slot(j) + C::kXScaleOffset + 4 * stream_tid,
                      p.x_scales + (k0 / kFp8BlockSize) * p.T + stream_tid);
    }
  };
  auto zero_x_padding = [&] {
    for (int s = 0; s < C::kStages; ++s) {
      uint4* x_rows = reinterpret_cast<uint4*>(ring + s * C::kStepBytes + C::kWBytes);
      for (int c = p.T * C::kXChunks + stream_tid; c < C::kTokenRows * C::kXChunks; c += C::kStreamThreads) {
        x_rows[mma::swizzled_chunk(c / C::kXChunks, c % C::kXChunks, C::kXChunks)] = make_uint4(0u, 0u, 0u, 0u);
      }
      if constexpr (kXFp8) {
        float* x_scales = reinterpret_cast<float*>(ring + s * C::kStepBytes + C::kXScaleOffset);
        for (int t = p.T + stream_tid; t < C::kTokenRows; t += C::kStreamThreads) x_scales[t] = 0.f;
      }
    }
  };

  const int g = lane >> 2, c4 = lane & 3;
  // BF16 without wgmma: sum += this warp's rows × all tokens over step j.
  auto mma_step = [&](int j, float(&sum)[C::kWarpTiles][kNT][4]) {
    const uint8_t* w_step = slot(j);
    const uint32_t x_addr = mma::smem_address(w_step + C::kWBytes);
#pragma unroll
    for (int kk = 0; kk < C::kStepK / 16; ++kk) {
      uint32_t a[C::kWarpTiles][4], b[kNT][2];
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) {
        const int row0 = (part * C::kWarpTiles + mt) * 16;
        mma::ldmatrix_x4(a[mt], w_step + 16 * mma::a_fragment_chunk(lane, row0, 2 * kk, kRowBytes / 16));
      }
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

  // FP8: the same, with k permuted inside the step (alike for W and x, so the sum is unchanged) so
  // that a thread's A pairs come from 4 contiguous bytes: MMA i (0..7) takes, for thread c4, the
  // bytes 4(i % 4)..+3 of chunk c4 + 4(i / 4) of rows g and g + 8 (fragment k 2c4, 2c4+1 from the
  // low two, 2c4+8, 2c4+9 from the high two) and x's BF16 at those same 4 k.
  auto mma_step_fp8 = [&](int j, float(&sum)[C::kWarpTiles][kNT][4]) {
    const uint8_t* w_step = slot(j);
    const uint4* x_step = reinterpret_cast<const uint4*>(w_step + C::kWBytes);
#pragma unroll
    for (int h = k_part; h < 2; h += C::kKSplit) {
      uint32_t a[C::kWarpTiles][4][4];  // [mt][i % 4][fragment register]
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) {
        const int row = (part * C::kWarpTiles + mt) * 16 + g;
        const uint4 top = reinterpret_cast<const uint4*>(w_step)[w_chunk<true>(row, c4 + 4 * h)];
        const uint4 bottom = reinterpret_cast<const uint4*>(w_step)[w_chunk<true>(row + 8, c4 + 4 * h)];
        const uint32_t top_words[4] = {top.x, top.y, top.z, top.w};
        const uint32_t bottom_words[4] = {bottom.x, bottom.y, bottom.z, bottom.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          e4m3x4_to_bf16(top_words[i], a[mt][i][0], a[mt][i][2]);
          e4m3x4_to_bf16(bottom_words[i], a[mt][i][1], a[mt][i][3]);
        }
      }
#pragma unroll
      for (int jt = 0; jt < kNT; ++jt) {
        const int t = jt * 8 + g;  // x's BF16 at k 16c4 + 64h .. +15: chunks 2c4 + 8h, +1
        const uint4 first = x_step[mma::swizzled_chunk(t, 2 * c4 + 8 * h, C::kXChunks)];
        const uint4 second = x_step[mma::swizzled_chunk(t, 2 * c4 + 8 * h + 1, C::kXChunks)];
        const uint32_t x_words[8] = {first.x, first.y, first.z, first.w, second.x, second.y, second.z, second.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t b0 = scale_x_for_fp8(x_words[2 * i]), b1 = scale_x_for_fp8(x_words[2 * i + 1]);
#pragma unroll
          for (int mt = 0; mt < C::kWarpTiles; ++mt) mma::mma_bf16(sum[mt][jt], a[mt][i], b0, b1);
        }
      }
    }
  };

  float acc[C::kWarpTiles][C::kAccN8][4] = {};
  // W8A8: one step's products per m64 tile.
  [[maybe_unused]] float step_acc[kXFp8 ? C::kWarpTiles : 1][kXFp8 ? 4 * C::kAccN8 : 1] = {};
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // Swapped operands: x's tokens (A, m64) times the step's kRows weight rows (B); the warp holds
  // tokens 16·part + g (+8) of columns (weight rows) 8jn + 2c4 (+1), whose products are added times
  // the token's scale and the scale of the column's block (first or last, see second_block_col).
  [[maybe_unused]] auto swapped_step = [&](int j) {
    if constexpr (C::kSwapAB) {
      const uint32_t w_addr = mma::smem_address(slot(j)), x_addr = w_addr + C::kWBytes;
      const uint64_t x_desc = wgmma::descriptor_k_major_sw128(x_addr), w_desc = wgmma::descriptor_k_major_sw128(w_addr);
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < kRowBytes / 32; ++kk) {
        wgmma::mma_e4m3<kRows>(step_acc[0], wgmma::descriptor_advance(x_desc, 32 * kk),
                               wgmma::descriptor_advance(w_desc, 32 * kk), /*accumulate=*/kk > 0);
      }
      wgmma::commit_group();
      wgmma::wait_group<0>();
      const float* w_scales = reinterpret_cast<const float*>(slot(j) + C::kScaleOffset);
      const float* x_scales = reinterpret_cast<const float*>(slot(j) + C::kXScaleOffset);
      const float token_scale[2] = {x_scales[16 * part + g], x_scales[16 * part + g + 8]};
      const float scale[2][2] = {{w_scales[0] * token_scale[0], w_scales[0] * token_scale[1]},
                                 {w_scales[1] * token_scale[0], w_scales[1] * token_scale[1]}};
#pragma unroll
      for (int jn = 0; jn < C::kAccN8; ++jn) {
        const float(&column_scale)[2] = scale[8 * jn >= second_block_col];
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][jn][e] += column_scale[e >> 1] * step_acc[0][4 * jn + e];
      }
    }
  };
#endif
  auto compute = [&](int j) {
    if constexpr (C::kWgmma) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      if constexpr (C::kSwapAB) {
        swapped_step(j);
      } else {
        // Each warpgroup multiplies its m64 tiles of the step's W (W8A8 128-row tiles: both, or with
        // two warpgroups per stream the one at rows 64(part / 4)..) by x [8·kNT tokens], 32 bytes of
        // each row per instruction (warp part % 4 holds rows 16(part % 4).. of each, see wgmma.cuh),
        // and waits until the tensor cores have read the slot: it is refilled after the next barrier.
        const uint32_t w_addr = mma::smem_address(slot(j)) + (part / 4) * C::kWarpTiles * 64 * kRowBytes;
        const uint32_t x_addr = mma::smem_address(slot(j)) + C::kWBytes;
        const uint64_t w_desc = wgmma::descriptor_k_major_sw128(w_addr),
                       x_desc = wgmma::descriptor_k_major_sw128(x_addr);
        wgmma::fence();
#pragma unroll
        for (int mt = 0; mt < C::kWarpTiles; ++mt) {
          auto& sum = reinterpret_cast<float(&)[4 * kNT]>(acc[mt]);
#pragma unroll
          for (int kk = 0; kk < kRowBytes / 32; ++kk) {
            const uint64_t a = wgmma::descriptor_advance(w_desc, mt * 64 * kRowBytes + 32 * kk);
            const uint64_t b = wgmma::descriptor_advance(x_desc, 32 * kk);
            if constexpr (kXFp8) {
              wgmma::mma_e4m3<8 * kNT>(step_acc[mt], a, b, /*accumulate=*/kk > 0);
            } else {
              wgmma::mma_bf16<8 * kNT>(sum, a, b);
            }
          }
        }
        wgmma::commit_group();
        wgmma::wait_group<0>();
        if constexpr (kXFp8) {
          // The step is one 128×128 scale block of W and one 128-group of each token: its products
          // are added times the weight scale and the token's scale (column 8jt + 2c4 + e % 2).
          const float w_scale = *reinterpret_cast<const float*>(slot(j) + C::kScaleOffset);
          const float2* x_scales = reinterpret_cast<const float2*>(slot(j) + C::kXScaleOffset);
#pragma unroll
          for (int jt = 0; jt < kNT; ++jt) {
            const float2 token_scales = x_scales[4 * jt + c4];  // tokens 8jt + 2c4, +1
            const float scale[2] = {w_scale * token_scales.x, w_scale * token_scales.y};
#pragma unroll
            for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
              for (int e = 0; e < 4; ++e) acc[mt][jt][e] += scale[e & 1] * step_acc[mt][4 * jt + e];
            }
          }
        }
      }
#else  // built for a card without wgmma (not sm_90a): BF16 through mma.sync on the same warps and layout
      if constexpr (kXFp8) {
        __trap();  // never launched: the W8A8 path needs sm_90 (GemmRunner checks)
      } else {
        mma_step(j, acc);
      }
#endif
    } else if constexpr (C::kFp8) {
      float step_sum[C::kWarpTiles][kNT][4] = {};
      mma_step_fp8(j, step_sum);
      const float scale = *reinterpret_cast<const float*>(slot(j) + C::kScaleOffset);
#pragma unroll
      for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
        for (int jt = 0; jt < kNT; ++jt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][jt][e] += scale * (step_sum[mt][jt][e] * 0x1p56f);
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
  zero_x_padding();  // seen by the stream's warps after the loop's first barrier
  cuda_utils::allow_dependent_launch();
  cuda_utils::wait_for_previous_grids();
  set_x_offsets();
#pragma unroll
  for (int j = 0; j < C::kStages - 1; ++j) {
    if (j < num) load_x(j);
  }
  mma::cp_async_commit();
  // BF16 and W8A8: the ring's last slot is still free, so its step streams now rather than once step
  // 0's x has come from L2, which leaves this SM's memory pipe idle meanwhile when the prefetched
  // weights all landed during the previous kernel (measured on the H100: BF16 9B q_proj 23.0 -> 22.4
  // µs at T = 1, 26.5 -> 25.9 at T = 64, 35B-A3B q_proj 14.5 -> 14.0 at T = 64; W8A16 lost 0.5-2 µs,
  // so it keeps loading step S-1 after step 0's barrier).
  constexpr int kEarlySteps = C::kWidenW ? 0 : 1;
  if constexpr (kEarlySteps == 1) {
    if (C::kStages - 1 < num) {
      load_w(C::kStages - 1);
      load_x(C::kStages - 1);
    }
    mma::cp_async_commit();
  }
  for (int j = 0; j < num; ++j) {
    // Groups so far: W of steps 0..S-2, x of those, (not W8A16) step S-1, then one (W + x) per iteration
    // j >= kEarlySteps (step j + S - 1). Step j's data is complete once at most
    // min(max(j, kEarlySteps), S-2) newer groups are pending.
    mma::cp_async_wait_at_most<C::kStages - 2>(std::max(j, kEarlySteps));
    if constexpr (C::kWgmma) wgmma::fence_shared_for_async_proxy();
    sync_stream(stream, C::kStreamThreads);  // all of step j landed; every warp is done with step j-1
    if (j >= kEarlySteps) {
      if (j + C::kStages - 1 < num) {
        load_w(j + C::kStages - 1);
        load_x(j + C::kStages - 1);
      }
      mma::cp_async_commit();
    }
    compute(j);
  }
  mma::cp_async_wait<0>();
  __syncthreads();  // every stream is done with its ring: reuse it for the reduction

  // C fragment (mt, jt): row (part·kWarpTiles + mt)·16 + g (+8 in e = 2, 3), token 8jt + 2c (+1 in
  // odd e); with wgmma, m64 tile (part / 4)·kWarpTiles + mt's rows 16(part % 4) + g (+8); swapped,
  // token 16·part + g (+8 in e = 2, 3), row 8jt + 2c (+1 in odd e).
  float* red = reinterpret_cast<float*>(smem);  // [stream, k part][token][row]
  const int sum_index = stream * C::kKSplit + k_part;
#pragma unroll
  for (int mt = 0; mt < C::kWarpTiles; ++mt) {
#pragma unroll
    for (int jt = 0; jt < C::kAccN8; ++jt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = C::kSwapAB ? jt * 8 + 2 * c4 + (e & 1)
                                   : (C::kWgmma ? ((part / 4) * C::kWarpTiles + mt) * 64 + part % 4 * 16
                                                : (part * C::kWarpTiles + mt) * 16) +
                                         g + (e >> 1) * 8;
        const int t = C::kSwapAB ? 16 * part + g + (e >> 1) * 8 : jt * 8 + 2 * c4 + (e & 1);
        red[(sum_index * C::kTokenRows + t) * C::kRedStride + row] = acc[mt][jt][e];
      }
    }
  }
  __syncthreads();
  const int rows = int(std::min<int64_t>(kRows, p.N - n0));
  for (int i = tid; i < p.T * kRows; i += C::kThreads) {
    const int t = i / kRows, row = i % kRows;
    if (row >= rows) continue;
    float v = 0.f;
#pragma unroll
    for (int s = 0; s < C::kSums; ++s) v += red[(s * C::kTokenRows + t) * C::kRedStride + row];
    if (p.splits == 1) {
      store_output(p, t, n0 + row, v);
    } else {
      p.partial[(int64_t(split) * p.T + t) * p.N + n0 + row] = v;
    }
  }
  if (p.splits > 1) finish_split_k(p, n0, kRows);
}

// Whether the kernel takes these operands: 1 <= T <= 64, K a multiple of 128, x rows 16-byte
// aligned, W 16-byte aligned. (A 64-row tile never straddles a 128-row FP8 scale block: tiles
// start at multiples of 64.)
inline bool supports(int64_t T, int64_t K, int64_t ldx, const void* x, const void* w) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return T >= 1 && T <= kMaxTokens && K % 128 == 0 && ldx % 8 == 0 && aligned(x) && aligned(w);
}

// Splits of K: "many" gives as many blocks as fit in one wave (one block per SM) where there are at
// most half as many row tiles as SMs (1 otherwise), each split covering at least 512 of K and the
// partials fitting `workspace_bytes`. (Rounding up took a second, mostly idle wave: 64 tiles on 132
// SMs made 3 splits, 192 blocks. With 2 splits, 128 blocks, the autotune still keeps one split on
// the H100: 4096×4096 BF16 T = 1 14.6 µs vs 13.2, T = 32 17.3 vs 14.0.)
inline int many_splits(int64_t T, int64_t N, int64_t K, int tile_rows, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + tile_rows - 1) / tile_rows;
  int64_t many = std::min<int64_t>(sms / tiles, K / 512);
  while (many > 1 && size_t(many * T * N) * sizeof(float) > workspace_bytes) --many;
  return int(std::max<int64_t>(many, 1));
}

// The default: 64-row tiles, one split (each row tile streams all of K) unless there are fewer
// tiles than a quarter of the SMs, then many_splits (measured on the H100: one split wins from
// ~64 tiles on, except for some long-K shapes). Called per GEMM, so it allocates nothing.
inline SkinnyTiling default_tiling(int64_t T, int64_t N, int64_t K, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + kRows - 1) / kRows;
  return {kRows, 4 * tiles >= sms ? 1 : many_splits(T, N, K, kRows, sms, workspace_bytes)};
}

// `rows`-row tiles of the swapped W8A8 form (kSwappedRows), split where they fill under half the SMs,
// if its blocks fill at least 85% of at most three waves (one block per SM), else splits 0: what
// they are for is matching the SM count where m64 multiples cannot (measured on the H100 at T = 64:
// 9B in_proj 129 96-row tiles 21.7 µs vs 97 128-row ones 24.4; 80-row tiles' 155 blocks 33.3).
inline SkinnyTiling swapped_tiling(int64_t T, int64_t N, int64_t K, int rows, int sms, size_t workspace_bytes) {
  const int64_t tiles = (N + rows - 1) / rows;
  const int splits = 2 * tiles >= sms ? 1 : many_splits(T, N, K, rows, sms, workspace_bytes);
  const int64_t blocks = tiles * splits, waves = (blocks + sms - 1) / sms;
  return {rows, waves <= 3 && 100 * blocks >= 85 * waves * sms ? splits : 0};
}

// Tilings worth timing (the autotune), the default first: 64-row tiles with one split and with
// many_splits; for T <= 8 where 64-row tiles leave SMs idle, 32-row and (BF16 only: they would
// straddle FP8's 128-row scale blocks) 48-row tiles with one split, more blocks each streaming its
// rows' whole K; for FP8 where 64-row tiles take more than a wave, 128-row tiles (one scale block;
// W8A16 only at T <= 8, see has_tile_rows), fewer blocks each streaming as many bytes as a BF16
// 64-row block and, with more tokens, reading x once per 128 rows; above 16 tokens (their steps
// always hold 64 token rows of x) W8A8 80- and 96-row tiles where they fill the SMs
// (swapped_tiling). Measured on the H100: BF16 4096×4096 12.3 µs with 32 rows vs 13.2 with 64; FP8 9B in_proj 24.2
// -> 22.6 µs with 128 rows, 35B-A3B in_proj 14.8 -> 12.9. Dropped: 32-row tiles at T = 64 (4096×4096 16.9 µs, behind
// cuBLASLt's 16.1), a split count filling the waves best (27B mlp down 13 splits: 78.5 vs 65.9 µs with one).
inline std::vector<SkinnyTiling> tilings(int64_t T, int64_t N, int64_t K, bool fp8, int sms, size_t workspace_bytes) {
  const SkinnyTiling first = default_tiling(T, N, K, sms, workspace_bytes);
  std::vector<SkinnyTiling> out{first};
  const int other = first.splits == 1 ? many_splits(T, N, K, kRows, sms, workspace_bytes) : 1;
  if (other != first.splits) out.push_back({kRows, other});
  if (T <= 8 && (N + kRows - 1) / kRows < sms) {
    out.push_back({32, 1});
    if (!fp8) out.push_back({48, 1});
  }
  if (fp8 && (N + kRows - 1) / kRows > sms) out.push_back({128, 1});
  if (fp8 && T > 16) {  // W8A8 only (supports_w8a8)
    for (const int rows : kSwappedRows) {
      if (const SkinnyTiling tiling = swapped_tiling(T, N, K, rows, sms, workspace_bytes); tiling.splits) {
        out.push_back(tiling);
      }
    }
  }
  return out;
}

// Whether the W8A8 form (FP8 weights, x quantized as for cuBLASLt W8A8, E4M3 wgmma) runs T tokens
// as `tiling`: 64-row tiles (one m64 wgmma per stream), 128-row ones (two) or kSwappedRows (x as A).
inline bool supports_w8a8(int64_t T, SkinnyTiling tiling) {
  return T >= 1 && T <= kMaxTokens &&
         (tiling.tile_rows == kRows || tiling.tile_rows == 128 || is_swapped_rows(tiling.tile_rows));
}

// Whether the kernel has tile_rows for this weight type and T (see tilings).
inline bool has_tile_rows(int tile_rows, bool fp8, int64_t T) {
  return tile_rows == kRows || (T <= 8 && (tile_rows == 32 || (tile_rows == 48 && !fp8) || (tile_rows == 128 && fp8)));
}

template <typename WeightT, int kNT, int kTileRows, bool kXFp8 = false, int kBlocksPerSm = 1>
void launch_tiles(const Params& p, unsigned grid_y, cudaStream_t stream) {
  using C = Config<WeightT, kNT, kTileRows, kXFp8, kBlocksPerSm>;
  constexpr auto kernel = skinny_gemm_kernel<WeightT, kNT, kTileRows, kXFp8, kBlocksPerSm>;
  cuda_utils::allow_shared_memory<kernel>(C::kSmemBytes, "skinny GEMM");
  const dim3 grid(unsigned((p.N + kTileRows - 1) / kTileRows), grid_y);
  cuda_utils::launch_programmatic(kernel, grid, dim3(C::kThreads), C::kSmemBytes, stream, "skinny GEMM", p);
}

// kTileRows-row tiles, two blocks per SM where p asks (Params::two_per_sm) and the form has them.
template <typename WeightT, int kNT, int kTileRows, bool kHasPaired>
void launch_one_or_two_per_sm(const Params& p, unsigned grid_y, cudaStream_t stream) {
  if constexpr (kHasPaired) {
    if (p.two_per_sm) return launch_tiles<WeightT, kNT, kTileRows, false, 2>(p, grid_y, stream);
  }
  launch_tiles<WeightT, kNT, kTileRows>(p, grid_y, stream);
}

// 64-row tiles of more than one token tile (FP8's 64-token step leaves a 2-slot ring at half the
// shared memory, so it has no two-per-SM form).
template <typename WeightT, int kNT>
void launch_token_tiles(const Params& p, unsigned grid_y, cudaStream_t stream) {
  launch_one_or_two_per_sm<WeightT, kNT, kRows, kNT <= 4 || sizeof(WeightT) == 2>(p, grid_y, stream);
}

template <int kNT>
void launch_w8a8_tiles(const Params& p, unsigned grid_y, cudaStream_t stream) {
  if (p.tile_rows == kSwappedRows[0]) {  // x is one m64 tile of 64 token rows, whatever T
    launch_tiles<uint8_t, 8, kSwappedRows[0], true>(p, grid_y, stream);
  } else if (p.tile_rows == kSwappedRows[1]) {
    launch_tiles<uint8_t, 8, kSwappedRows[1], true>(p, grid_y, stream);
  } else if (p.tile_rows == 128) {
    launch_tiles<uint8_t, kNT, 128, true>(p, grid_y, stream);
  } else {
    launch_tiles<uint8_t, kNT, kRows, true>(p, grid_y, stream);
  }
}

// Runs p (tile rows as has_tile_rows allows, splits, partial and counters set by the caller; W8A8
// where p.xq is set, see supports_w8a8) with n8 token tiles for p.T, on a grid of N's row tiles ×
// the splits (grouped: × the expert slots).
template <typename WeightT>
void launch(const Params& p, cudaStream_t stream, unsigned expert_slots = 0) {
  const unsigned y = p.active_experts ? expert_slots : unsigned(p.splits);
  if constexpr (sizeof(WeightT) == 1) {
    if (p.xq) {
      if (p.T <= 8) {
        launch_w8a8_tiles<1>(p, y, stream);
      } else if (p.T <= 16) {
        launch_w8a8_tiles<2>(p, y, stream);
      } else if (p.T <= 32) {
        launch_w8a8_tiles<4>(p, y, stream);
      } else {
        launch_w8a8_tiles<8>(p, y, stream);
      }
      return;
    }
  }
  if (p.T <= 8) {
    if (p.tile_rows == 32) {
      launch_tiles<WeightT, 1, 32>(p, y, stream);
    } else if (sizeof(WeightT) == 2 && p.tile_rows == 48) {
      if constexpr (sizeof(WeightT) == 2) launch_tiles<WeightT, 1, 48>(p, y, stream);
    } else if (sizeof(WeightT) == 1 && p.tile_rows == 128) {
      if constexpr (sizeof(WeightT) == 1) launch_one_or_two_per_sm<WeightT, 1, 128, true>(p, y, stream);
    } else {  // FP8 two per SM takes 128-row tiles (set_grouped_tiling in gemm.cu)
      launch_one_or_two_per_sm<WeightT, 1, kRows, sizeof(WeightT) == 2>(p, y, stream);
    }
  } else if (p.T <= 16) {
    launch_token_tiles<WeightT, 2>(p, y, stream);
  } else if (p.T <= 32) {
    launch_token_tiles<WeightT, 4>(p, y, stream);
  } else {
    launch_token_tiles<WeightT, 8>(p, y, stream);
  }
}

}  // namespace ds::kernels::skinny
