#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cub/block/block_scan.cuh>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/activation.h"
#include "kernels/cuda_utils.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_tile.cuh"
#include "kernels/moe.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using cuda_utils::check_launch;

// Batches up to this many tokens run the experts through grouped_skinny_gemm, else the tile kernel
// (measured on the H100, 35B-A3B layer, `moe_bench`: T = 1 81 vs 100 µs, 8: 207 vs 242, 32: 490 vs
// 514, FP8 32: 431 vs 469; at 64 the tile kernel was faster, 664 vs 676, FP8 607 vs 704, until the
// grouped launches ran two blocks per SM: BF16 33, 48, 64 tokens 515, 587, 644 -> 425, 487, 535 µs;
// FP8's 64-token step leaves no room for two blocks per SM, so it keeps the tile kernel above 32).
template <typename WeightT>
constexpr int64_t kMaxSkinnyTokens = sizeof(WeightT) == 2 ? 64 : 32;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("MoeRunner: ") + what + ": " + cudaGetErrorString(err));
}

// Where the counting sort of the (token, slot) pairs by expert writes (see sort_by_expert).
struct SortOutputs {
  int32_t* row_offsets;     // [experts + 1]: expert e owns sorted rows [row_offsets[e], row_offsets[e+1])
  int32_t* tile_offsets;    // [experts + 1]: prefix sums of ceil(rows / 64) (the tile kernel's row tiles)
  int32_t* active_experts;  // [active_slots]: the experts with rows, ascending, then -1
  int64_t active_slots;
  int32_t* sorted_tokens;  // [pairs]: the token of each sorted row
  int32_t* position_of;    // [pairs]: the sorted row of each pair
};

// What the routing kernel does beyond moe_route's contract (MoeRunner's forward; all unset there).
struct RouteExtras {
  // The shared expert's gate sigmoid(x[t] · shared_gate) (x [T, H]): written as the routing weight
  // of one more pair per token, expert shared_expert (the shared expert run as an expert, not
  // renormalised with the top k), when shared_expert >= 0; else to shared_scale[t].
  const __nv_bfloat16* x = nullptr;
  const __nv_bfloat16* shared_gate = nullptr;
  int64_t H = 0;
  int32_t shared_expert = -1;
  float* shared_scale = nullptr;
  // The last block to finish (done_blocks counts them, back to 0 after) sorts the pairs by expert.
  unsigned* done_blocks = nullptr;
  SortOutputs sort{};
};

// 16 warps a block (16 tokens); the block that sorts has as many threads for a prefill's pairs.
constexpr int kRouteThreads = 512;
constexpr int kSortExpertsPerThread = 4;
static_assert(kRouteThreads * kSortExpertsPerThread >= 1025, "the sort's scan covers 1024 experts and the shared one");

// One expert's share of the sorted rows, the tile kernel's row tiles and the active-expert list;
// summed by the sort's block scan into each expert's offsets.
struct ExpertExtent {
  int32_t rows = 0, tiles = 0, active = 0;
  __device__ ExpertExtent operator+(const ExpertExtent& o) const {
    return {rows + o.rows, tiles + o.tiles, active + o.active};
  }
};

// f(i, expert of pair i) for the block's share of the pairs (written by other blocks: read from L2),
// each thread loading 8 ids before it uses any, so that a prefill's tens of thousands of pairs cost
// one memory latency per 8 rounds.
template <typename F>
__device__ void for_pairs(const int32_t* topk_ids, int64_t pairs, F f) {
  constexpr int kLoads = 8;
  for (int64_t i0 = threadIdx.x; i0 < pairs; i0 += int64_t(blockDim.x) * kLoads) {
    int32_t e[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int64_t i = i0 + int64_t(u) * blockDim.x;
      e[u] = i < pairs ? __ldcg(&topk_ids[i]) : -1;
    }
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      if (e[u] >= 0) f(i0 + int64_t(u) * blockDim.x, e[u]);
    }
  }
}

// Counting sort of the pairs (topk_ids [pairs]; pair i is token i / slots_per_token) by expert, by
// one block of kRouteThreads threads, cursor [experts] in shared memory: count, one block scan of
// the experts' extents (each thread owning kSortExpertsPerThread consecutive experts), place. Rows of an expert come in
// no particular order: each row's result depends on that row only.
__device__ void sort_by_expert(const int32_t* topk_ids, int64_t pairs, int64_t slots_per_token, int64_t experts,
                               const SortOutputs& out, int32_t* cursor) {
  using Scan = cub::BlockScan<ExpertExtent, kRouteThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) cursor[e] = 0;
  __syncthreads();
  for_pairs(topk_ids, pairs, [&](int64_t, int32_t e) { atomicAdd(&cursor[e], 1); });
  __syncthreads();
  const int64_t e0 = int64_t(threadIdx.x) * kSortExpertsPerThread;
  ExpertExtent extents[kSortExpertsPerThread];
#pragma unroll
  for (int i = 0; i < kSortExpertsPerThread; ++i) {
    const int32_t n = e0 + i < experts ? cursor[e0 + i] : 0;
    extents[i] = {n, (n + gemm_tile::kBM - 1) / gemm_tile::kBM, n > 0 ? 1 : 0};
  }
  ExpertExtent total;
  const auto add = [](const ExpertExtent& a, const ExpertExtent& b) { return a + b; };
  Scan(scan_storage).ExclusiveScan(extents, extents, ExpertExtent{}, add, total);
#pragma unroll
  for (int i = 0; i < kSortExpertsPerThread; ++i) {
    const int64_t e = e0 + i;
    if (e >= experts) break;
    if (cursor[e] > 0) out.active_experts[extents[i].active] = int32_t(e);
    out.row_offsets[e] = extents[i].rows;
    out.tile_offsets[e] = extents[i].tiles;
    cursor[e] = extents[i].rows;
  }
  if (threadIdx.x == 0) {
    out.row_offsets[experts] = total.rows;
    out.tile_offsets[experts] = total.tiles;
  }
  for (int64_t a = total.active + threadIdx.x; a < out.active_slots; a += blockDim.x) out.active_experts[a] = -1;
  __syncthreads();
  for_pairs(topk_ids, pairs, [&](int64_t i, int32_t e) {
    const int32_t pos = atomicAdd(&cursor[e], 1);
    out.sorted_tokens[pos] = int32_t(i / slots_per_token);
    out.position_of[i] = pos;
  });
}

// sigmoid(x · gate) over H (a multiple of 8) by one warp.
// Each lane loads 4 chunks of x and the gate per round before using any, so that the round costs
// one memory latency rather than four (H = 2048: two rounds).
__device__ float shared_expert_gate(const __nv_bfloat16* x, const __nv_bfloat16* gate, int64_t H, int lane) {
  constexpr int kChunks = 4;
  float dot = 0.f;
  for (int64_t i0 = lane; i0 < H / 8; i0 += 32 * kChunks) {
    uint4 xv[kChunks], gv[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t i = i0 + 32 * c;
      xv[c] = i < H / 8 ? reinterpret_cast<const uint4*>(x)[i] : make_uint4(0u, 0u, 0u, 0u);
      gv[c] = i < H / 8 ? reinterpret_cast<const uint4*>(gate)[i] : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv[c]);
      const __nv_bfloat162* gp = reinterpret_cast<const __nv_bfloat162*>(&gv[c]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(xp[j]), b = __bfloat1622float2(gp[j]);
        dot += a.x * b.x + a.y * b.y;
      }
    }
  }
  return 1.f / (1.f + expf(-cuda_utils::warp_sum(dot)));
}

// One warp per token: softmax over E logits, k rounds of warp argmax (lower expert id on ties),
// renormalisation. Lane l owns experts l, l+32, ... (at most 32 of them: E <= 1024). A NaN logit
// counts as -inf (see cpu::moe_route): comparisons stay a total order, so every lane agrees on each
// round's expert and the k ids are distinct whatever the router produced. Token t's pairs are
// topk_ids / topk_weights [t·slots, t·slots + k) (slots = k, or k + 1 with the shared expert as one
// more pair). Then the extras (see RouteExtras).
constexpr int kMaxLogitsPerLane = 32;  // E <= 1024
__global__ void __launch_bounds__(kRouteThreads)
    route_kernel(const float* logits, int64_t T, int64_t E, int64_t k, bool norm_topk_prob, int32_t* topk_ids,
                 float* topk_weights, RouteExtras extras) {
  // Launched programmatically after the router GEMM; a programmatic kernel after (the grouped GEMM)
  // may launch at once: it waits for this grid to complete before it reads the expert lists.
  cuda_utils::allow_dependent_launch();
  cuda_utils::wait_for_previous_grids();
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  const int64_t slots = k + (extras.shared_expert >= 0 ? 1 : 0);
  if (t < T) {
    // The lane's logits in registers, loaded at once (the loops below are unrolled over them).
    float logit[kMaxLogitsPerLane];
#pragma unroll
    for (int i = 0; i < kMaxLogitsPerLane; ++i) {
      const int64_t e = lane + 32 * i;
      const float l = e < E ? logits[t * E + e] : -INFINITY;
      logit[i] = isnan(l) ? -INFINITY : l;
    }
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kMaxLogitsPerLane; ++i) mx = fmaxf(mx, logit[i]);
    for (int offset = 16; offset > 0; offset >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxLogitsPerLane; ++i) {
      if (lane + 32 * i < E) sum += expf(logit[i] - mx);
    }
    sum = cuda_utils::warp_sum(sum);

    uint32_t taken = 0;  // bit i: expert lane + 32·i already chosen
    float picked_sum = 0.f;
    int32_t my_expert = 0;  // lane j < k: pick j and its weight, stored once at the end
    float my_weight = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      float best = -INFINITY;
      int32_t best_e = INT32_MAX;
#pragma unroll
      for (int i = 0; i < kMaxLogitsPerLane; ++i) {
        const int64_t e = lane + 32 * i;
        if (e < E && !(taken >> i & 1u) && (logit[i] > best || best_e == INT32_MAX)) {
          best = logit[i];
          best_e = int32_t(e);
        }
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int32_t other_e = __shfl_xor_sync(0xffffffffu, best_e, offset);
        if (other > best || (other == best && other_e < best_e)) {
          best = other;
          best_e = other_e;
        }
      }
      if (best_e % 32 == lane) taken |= 1u << (best_e / 32);
      const float w = expf(best - mx) / sum;
      picked_sum += w;
      if (lane == j) {
        my_expert = best_e;
        my_weight = w;
      }
    }
    if (lane < k) {
      topk_ids[t * slots + lane] = my_expert;
      topk_weights[t * slots + lane] = norm_topk_prob ? my_weight / picked_sum : my_weight;
    }
    if (extras.shared_gate) {
      const float gate = shared_expert_gate(extras.x + t * extras.H, extras.shared_gate, extras.H, lane);
      if (lane == 0 && extras.shared_expert >= 0) {
        topk_ids[t * slots + k] = extras.shared_expert;
        topk_weights[t * slots + k] = gate;
      } else if (lane == 0) {
        extras.shared_scale[t] = gate;
      }
    }
  }
  if (!extras.done_blocks) return;
  // The pairs of every block are written: the last block to get here sorts them (a lone block, as
  // in decode steps of up to 16 tokens, skips the device-wide count).
  const bool alone = gridDim.x == 1;
  if (alone) {
    __syncthreads();
  } else {
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(extras.done_blocks, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
  }
  extern __shared__ int32_t cursor[];
  sort_by_expert(topk_ids, T * slots, slots, E + (extras.shared_expert >= 0 ? 1 : 0), extras.sort, cursor);
  if (!alone && threadIdx.x == 0) *extras.done_blocks = 0;
}

void launch_route(const float* logits, int64_t T, int64_t E, int64_t k, bool norm_topk_prob, int32_t* topk_ids,
                  float* topk_weights, const RouteExtras& extras, cudaStream_t stream) {
  const size_t smem = extras.done_blocks ? sizeof(int32_t) * size_t(E + 1) : 0;
  cuda_utils::launch_programmatic(route_kernel, dim3(cuda_utils::grid_dim(T * 32, kRouteThreads)), dim3(kRouteThreads),
                                  smem, stream, "cuda::moe_route", logits, T, E, k, norm_topk_prob, topk_ids,
                                  topk_weights, extras);
}

// x_sorted[pos] = x[sorted_tokens[pos]], one block per position, 16-byte pieces (H % 8 == 0).
__global__ void gather_kernel(const __nv_bfloat16* x, int64_t H, const int32_t* sorted_tokens,
                              __nv_bfloat16* x_sorted) {
  const int64_t pos = blockIdx.x;
  const int64_t t = sorted_tokens[pos];
  const uint4* src = reinterpret_cast<const uint4*>(x + t * H);
  uint4* dst = reinterpret_cast<uint4*>(x_sorted + pos * H);
  for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) dst[i] = src[i];
}

// All experts' GEMMs y_e = x_e·W_eᵀ in one launch: blockIdx.y walks the row tiles of all
// experts (tile_offsets), blockIdx.x the 64-column tiles of N. Surplus blocks exit at once. Expert
// shared_expert (if >= 0) multiplies by shared_w instead (the shared expert as one more expert).
template <typename WeightT>
__global__ void __launch_bounds__(gemm_tile::kThreads)
    grouped_gemm_kernel(const __nv_bfloat16* x, const WeightT* w, const float* scale, __nv_bfloat16* y, int64_t N,
                        int64_t K, const int32_t* row_offsets, const int32_t* tile_offsets, int64_t experts,
                        int64_t shared_expert, const WeightT* shared_w, const float* shared_scale) {
  __shared__ gemm_tile::SharedTiles sh;
  const int64_t tile = blockIdx.y;
  if (tile >= tile_offsets[experts]) return;
  const int64_t e = cuda_utils::find_sequence(tile_offsets, experts, tile);
  const int64_t row0 = row_offsets[e], rows = row_offsets[e + 1] - row0;
  const int64_t scales_per_expert =
      ((N + kFp8BlockSize - 1) / kFp8BlockSize) * ((K + kFp8BlockSize - 1) / kFp8BlockSize);
  const bool shared = e == shared_expert;
  const WeightT* w_e = shared ? shared_w : w + e * N * K;
  const float* scale_e = scale ? (shared ? shared_scale : scale + e * scales_per_expert) : nullptr;
  gemm_tile::compute_tile(x + row0 * K, K, w_e, scale_e, y + row0 * N, N, rows, N, K,
                          (tile - tile_offsets[e]) * gemm_tile::kBM, int64_t(blockIdx.x) * gemm_tile::kBN, 0.f, sh);
}

// out[t] = shared_scale[t] · shared_out[t] (where the shared expert ran on its own) +
// Σ_{j < slots} w[t][j] · y_sorted[position_of[t·slots + j]]. One block per token, the token's
// positions and weights read once into shared memory, a thread per 8 consecutive h (H % 8 == 0):
// its slots' rows are independent 16-byte loads, so the block waits for memory about once.
constexpr int kMaxSlots = 33;  // top-k <= 32, and the shared expert
__global__ void combine_kernel(const __nv_bfloat16* y_sorted, const int32_t* position_of, const float* topk_weights,
                               int64_t slots, int64_t H, const __nv_bfloat16* shared_out, const float* shared_scale,
                               __nv_bfloat16* out) {
  __shared__ int32_t position[kMaxSlots];
  __shared__ float weight[kMaxSlots];
  cuda_utils::wait_for_previous_grids();  // launched programmatically after the down GEMM
  const int64_t t = blockIdx.x;
  if (threadIdx.x < slots) {
    position[threadIdx.x] = position_of[t * slots + threadIdx.x];
    weight[threadIdx.x] = topk_weights[t * slots + threadIdx.x];
  }
  __syncthreads();
  const float gate = shared_out ? shared_scale[t] : 0.f;
  for (int64_t h8 = threadIdx.x; h8 < H / 8; h8 += blockDim.x) {
    float acc[8] = {};
    if (shared_out) {
      const uint4 v = reinterpret_cast<const uint4*>(shared_out + t * H)[h8];
      const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&v);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = gate * __bfloat162float(e[i]);
    }
    for (int64_t j = 0; j < slots; ++j) {
      const uint4 v = reinterpret_cast<const uint4*>(y_sorted + int64_t(position[j]) * H)[h8];
      const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&v);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += weight[j] * __bfloat162float(e[i]);
    }
    uint4 packed;
    __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(&packed);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = __float2bfloat16(acc[i]);
    reinterpret_cast<uint4*>(out + t * H)[h8] = packed;
  }
}

// Carves one allocation into aligned pieces.
struct Carver {
  char* base;
  size_t used = 0;
  template <typename T>
  T* take(size_t count) {
    used = (used + 255) / 256 * 256;
    T* p = reinterpret_cast<T*>(base ? base + used : nullptr);
    used += count * sizeof(T);
    return p;
  }
};

// Where the shared expert runs: as expert E of the grouped GEMMs where its intermediate size is the
// experts' (the published Qwen3.5 MoE and Qwen3-Next models: one pair more per token, and no
// launches of its own) and the batch is a decode step's (up to 64 tokens); otherwise on its own
// through GemmRunner, whose dense GEMMs beat the grouped tile kernel on prefill-size batches
// (measured on the H100, 35B-A3B-fp8: as an expert at every T, decode at batch 64 took 28.39 ms
// against 29.06 on its own, the 8k-token prefill 267.9 ms against 261.8).
constexpr int64_t kSharedAsExpertMaxTokens = 64;
bool shared_as_expert(const MoeDims& d, int64_t T) {
  return d.shared_intermediate > 0 && d.shared_intermediate == d.expert_intermediate && T <= kSharedAsExpertMaxTokens;
}

// A forward pass's pairs: `slots` per token (k, and the shared expert's), over `experts` experts.
struct Routing {
  int64_t T, slots, experts, pairs;
  int32_t shared_expert;  // -1: the shared expert runs on its own (or there is none)
  explicit Routing(const MoeDims& d, int64_t tokens)
      : T(tokens),
        slots(d.top_k + (shared_as_expert(d, tokens) ? 1 : 0)),
        experts(d.num_experts + (shared_as_expert(d, tokens) ? 1 : 0)),
        pairs(tokens * slots),
        shared_expert(shared_as_expert(d, tokens) ? int32_t(d.num_experts) : -1) {}
  int64_t active_slots() const { return std::min(experts, pairs); }
};

struct Buffers {
  float* logits;
  int32_t* topk_ids;
  float* topk_weights;
  int32_t* row_offsets;
  int32_t* tile_offsets;
  int32_t* active_experts;
  int32_t* sorted_tokens;
  int32_t* position_of;
  unsigned* done_blocks;  // the routing kernel's block count (zeroed at allocation, back to 0 after each pass)
  bf16* x_sorted;
  bf16* hidden;
  bf16* act;
  bf16* y_sorted;
  // The shared expert on its own:
  bf16* shared_hidden;
  bf16* shared_act;
  bf16* shared_out;
  float* shared_scale;     // its gate per token
  Fp8Rows shared_act_fp8;  // shared_act quantized (batches up to kFp8RowsMaxTokens tokens)
};

Buffers carve(Carver& c, const MoeDims& d, int64_t max_tokens) {
  // The most pairs and experts of any T <= max_tokens: all tokens, or the most with the shared expert.
  const Routing all(d, max_tokens), with_shared(d, std::min(max_tokens, kSharedAsExpertMaxTokens));
  const size_t M = size_t(max_tokens), P = size_t(std::max(all.pairs, with_shared.pairs)), H = size_t(d.hidden);
  // The shared expert's own buffers only where some T <= max_tokens runs it on its own; its FP8 rows
  // only where that happens at T <= kFp8RowsMaxTokens (the only batches that write them).
  const size_t Ie = size_t(d.expert_intermediate), E = size_t(d.num_experts);
  const size_t Is = shared_as_expert(d, max_tokens) ? 0 : size_t(d.shared_intermediate);
  const size_t R = std::min<size_t>(M, kFp8RowsMaxTokens);
  const bool own_fp8_rows = Is > 0 && Is % kFp8BlockSize == 0 && !shared_as_expert(d, int64_t(R));
  const size_t experts = size_t(std::max(all.experts, with_shared.experts));
  Buffers b;
  b.logits = c.take<float>(M * E);
  b.topk_ids = c.take<int32_t>(P);
  b.topk_weights = c.take<float>(P);
  b.row_offsets = c.take<int32_t>(experts + 1);
  b.tile_offsets = c.take<int32_t>(experts + 1);
  b.active_experts = c.take<int32_t>(std::min(experts, P));
  b.sorted_tokens = c.take<int32_t>(P);
  b.position_of = c.take<int32_t>(P);
  b.done_blocks = c.take<unsigned>(1);
  b.x_sorted = c.take<bf16>(P * H);
  b.hidden = c.take<bf16>(P * 2 * Ie);
  b.act = c.take<bf16>(P * Ie);
  b.y_sorted = c.take<bf16>(P * H);
  b.shared_hidden = c.take<bf16>(M * 2 * Is);
  b.shared_act = c.take<bf16>(M * Is);
  b.shared_out = c.take<bf16>(M * H * (Is > 0));
  b.shared_scale = c.take<float>(M * (Is > 0));
  b.shared_act_fp8 = {};
  if (own_fp8_rows) b.shared_act_fp8 = {c.take<uint8_t>(R * Is), c.take<float>(R * Is / kFp8BlockSize)};
  return b;
}

}  // namespace

void moe_route(const float* logits, int64_t T, int64_t num_experts, int64_t top_k, bool norm_topk_prob,
               int32_t* topk_ids, float* topk_weights, cudaStream_t stream) {
  validate_moe_dims(MoeDims{1, num_experts, top_k, 1, 0, norm_topk_prob});
  if (T <= 0) return;
  launch_route(logits, T, num_experts, top_k, norm_topk_prob, topk_ids, topk_weights, RouteExtras{}, stream);
}

namespace {

// The weights of one MoE block with BF16 or FP8 matrices (scales nullptr for BF16).
template <typename WeightT>
struct ExpertWeights {
  const bf16* router;
  const bf16* shared_gate;
  const WeightT *gate_up, *down, *shared_gate_up, *shared_down;
  const float *gate_up_scale, *down_scale, *shared_gate_up_scale, *shared_down_scale;
};

// x_fp8: x quantized, for an FP8 W (ignored for BF16).
void dense_gemm(GemmRunner& gemm, const bf16* x, int64_t ldx, const bf16* w, const float*, bf16* y, int64_t ldy,
                int64_t T, int64_t N, int64_t K, cudaStream_t stream, const Fp8Rows*) {
  gemm.gemm(x, ldx, w, y, ldy, T, N, K, 0.f, stream);
}
void dense_gemm(GemmRunner& gemm, const bf16* x, int64_t ldx, const uint8_t* w, const float* scale, bf16* y,
                int64_t ldy, int64_t T, int64_t N, int64_t K, cudaStream_t stream, const Fp8Rows* x_fp8) {
  gemm.gemm_fp8(x, ldx, w, scale, y, ldy, T, N, K, 0.f, stream, Fp8Path::kAuto, x_fp8);
}

// One of the experts' projections (gate_up or down): the experts' matrices [E, N, K] and the
// shared expert's [N, K] (used where it runs as expert E), with their block scales for FP8.
template <typename WeightT>
struct ExpertMatrices {
  const WeightT* experts;
  const float* experts_scale;
  const WeightT* shared;
  const float* shared_scale;
};

// Whether the experts' GEMMs of T tokens run on the weight-streaming kernel: T <= kMaxSkinnyTokens
// (so as many rows per expert at most) and operands it takes (the shared expert's too where it
// runs as an expert).
template <typename WeightT>
bool grouped_skinny(const Routing& r, int64_t K, const void* x, const ExpertMatrices<WeightT>& m) {
  return r.T <= kMaxSkinnyTokens<WeightT> && grouped_skinny_supports(r.T, K, K, x, m.experts) &&
         (r.shared_expert < 0 || grouped_skinny_supports(r.T, K, K, x, m.shared));
}

// All experts' GEMMs in one launch: the weight-streaming kernel over the experts hit (each expert's
// weights read once; x_rows, if given, picks each sorted row's x row: the gather folded into its
// loads), else the tile kernel (x already sorted: no x_rows).
template <typename WeightT>
void grouped_gemm(const Buffers& b, const Routing& r, const bf16* x, const int32_t* x_rows,
                  const ExpertMatrices<WeightT>& m, bf16* y, int64_t N, int64_t K, cudaStream_t stream) {
  if (grouped_skinny(r, K, x, m)) {
    const ExpertGroups groups{b.active_experts, r.active_slots(), b.row_offsets, x_rows,
                              r.shared_expert,  m.shared,         m.shared_scale};
    grouped_skinny_gemm(x, K, m.experts, m.experts_scale, y, N, r.T, N, K, groups, stream);
    return;
  }
  if (x_rows) throw std::logic_error("MoeRunner: the tile kernel reads sorted x rows");
  using StoredT = std::conditional_t<sizeof(WeightT) == 1, uint8_t, __nv_bfloat16>;
  const int64_t max_tiles = (r.pairs + gemm_tile::kBM - 1) / gemm_tile::kBM + r.active_slots();
  const dim3 grid(unsigned((N + gemm_tile::kBN - 1) / gemm_tile::kBN), unsigned(max_tiles));
  grouped_gemm_kernel<StoredT><<<grid, gemm_tile::kThreads, 0, stream>>>(
      as_nv(x), reinterpret_cast<const StoredT*>(m.experts), m.experts_scale, as_nv(y), N, K, b.row_offsets,
      b.tile_offsets, r.experts, r.shared_expert, reinterpret_cast<const StoredT*>(m.shared), m.shared_scale);
  check_launch("MoeRunner grouped GEMM");
}

// Router GEMM -> routing (top-k, the shared expert's gate, the sort by expert) -> the experts'
// gate_up (x rows gathered by the skinny kernel's loads, or by a gather launch for the tile kernel)
// -> SiLU-mul -> down -> (the shared expert where it runs on its own) -> combine.
template <typename WeightT>
void moe_forward(const MoeDims& dims, const Buffers& b, GemmRunner& gemm, const bf16* x, int64_t T,
                 const ExpertWeights<WeightT>& w, bf16* out, cudaStream_t stream, const Fp8Rows* x_fp8 = nullptr) {
  const int64_t H = dims.hidden, E = dims.num_experts, k = dims.top_k, Ie = dims.expert_intermediate,
                Is = dims.shared_intermediate;
  const Routing r(dims, T);
  gemm.gemm(x, H, w.router, b.logits, E, T, E, H, 0.f, stream);
  RouteExtras extras;
  if (Is > 0) extras = RouteExtras{as_nv(x), as_nv(w.shared_gate), H, r.shared_expert, b.shared_scale};
  extras.done_blocks = b.done_blocks;
  extras.sort = {b.row_offsets, b.tile_offsets, b.active_experts, r.active_slots(), b.sorted_tokens, b.position_of};
  launch_route(b.logits, T, E, k, dims.norm_topk_prob, b.topk_ids, b.topk_weights, extras, stream);

  const ExpertMatrices<WeightT> gate_up{w.gate_up, w.gate_up_scale, w.shared_gate_up, w.shared_gate_up_scale};
  const ExpertMatrices<WeightT> down{w.down, w.down_scale, w.shared_down, w.shared_down_scale};
  const bool gather_in_loads = grouped_skinny(r, H, x, gate_up);
  if (!gather_in_loads) {
    gather_kernel<<<unsigned(r.pairs), 128, 0, stream>>>(as_nv(x), H, b.sorted_tokens, as_nv(b.x_sorted));
    check_launch("MoeRunner gather");
  }
  grouped_gemm(b, r, gather_in_loads ? x : b.x_sorted, gather_in_loads ? b.sorted_tokens : nullptr, gate_up, b.hidden,
               2 * Ie, H, stream);
  silu_and_mul(b.hidden, 2 * Ie, b.act, Ie, r.pairs, Ie, stream);
  grouped_gemm(b, r, b.act, nullptr, down, b.y_sorted, H, Ie, stream);
  const bool shared_on_its_own = Is > 0 && r.shared_expert < 0;
  if (shared_on_its_own) {
    // Batches a W8A8 skinny GEMM may take hand the FP8 shared expert its activations quantized: x
    // from the caller (x_fp8), the SiLU-mul output written beside it, so neither GEMM quantizes.
    // (Paths other than the W8A8 skinny kernel ignore the rows.)
    const bool write_rows =
        sizeof(WeightT) == 1 && T <= kFp8RowsMaxTokens && gemm.fp8_numerics() != Fp8Numerics::kW8A16;
    const Fp8Rows* act_fp8 = write_rows && b.shared_act_fp8.codes ? &b.shared_act_fp8 : nullptr;
    dense_gemm(gemm, x, H, w.shared_gate_up, w.shared_gate_up_scale, b.shared_hidden, 2 * Is, T, 2 * Is, H, stream,
               x_fp8);
    silu_and_mul(b.shared_hidden, 2 * Is, b.shared_act, Is, T, Is, stream, act_fp8);
    dense_gemm(gemm, b.shared_act, Is, w.shared_down, w.shared_down_scale, b.shared_out, H, T, H, Is, stream, act_fp8);
  }
  cuda_utils::launch_programmatic(combine_kernel, dim3(unsigned(T)), dim3(256), 0, stream, "MoeRunner combine",
                                  as_nv(b.y_sorted), b.position_of, b.topk_weights, r.slots, H,
                                  shared_on_its_own ? as_nv(b.shared_out) : nullptr, b.shared_scale, as_nv(out));
}

// The routing kernel reads x and the shared expert's gate in 16-byte pieces.
void check_inputs(int64_t T, int64_t max_tokens, const MoeDims& dims, const void* x, const void* shared_gate) {
  if (T < 0 || T > max_tokens) {
    throw std::invalid_argument("MoeRunner::forward: T " + std::to_string(T) + " outside [0, " +
                                std::to_string(max_tokens) + "]");
  }
  if (T > 0 && !cuda_utils::is_aligned(x, 16)) throw std::invalid_argument("MoeRunner::forward: x not 16-byte aligned");
  if (T > 0 && dims.shared_intermediate > 0 && !(shared_gate && cuda_utils::is_aligned(shared_gate, 16))) {
    throw std::invalid_argument("MoeRunner::forward: shared_gate missing or not 16-byte aligned");
  }
}

}  // namespace

MoeRunner::MoeRunner(const MoeDims& dims, int64_t max_tokens) : dims_(dims), max_tokens_(max_tokens) {
  validate_moe_dims(dims);
  if (max_tokens <= 0 || dims.hidden % 8 != 0 || dims.expert_intermediate % 8 != 0) {
    throw std::invalid_argument(
        "MoeRunner: need max_tokens > 0 and hidden, expert_intermediate multiples of 8 (hidden " +
        std::to_string(dims.hidden) + ", expert_intermediate " + std::to_string(dims.expert_intermediate) + ")");
  }
  Carver sizing{nullptr};
  carve(sizing, dims_, max_tokens_);
  scratch_bytes_ = sizing.used;
  check_cuda(cudaMalloc(&scratch_, scratch_bytes_), "cudaMalloc scratch");
  // The routing kernel's block count starts at 0 (and each pass leaves it there); synchronised, as
  // the forward passes run on streams that do not wait for the legacy default stream.
  Carver carver{static_cast<char*>(scratch_)};
  check_cuda(cudaMemset(carve(carver, dims_, max_tokens_).done_blocks, 0, sizeof(unsigned)), "cudaMemset counter");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

MoeRunner::~MoeRunner() { cudaFree(scratch_); }

void MoeRunner::forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeWeights<bf16>& w, bf16* out,
                        cudaStream_t stream) {
  check_inputs(T, max_tokens_, dims_, x, w.shared_gate);
  if (T == 0) return;
  Carver carver{static_cast<char*>(scratch_)};
  const ExpertWeights<bf16> ew{w.router,      w.shared_gate, w.experts_gate_up, w.experts_down, w.shared_gate_up,
                               w.shared_down, nullptr,       nullptr,           nullptr,        nullptr};
  moe_forward(dims_, carve(carver, dims_, max_tokens_), gemm, x, T, ew, out, stream);
}

void MoeRunner::forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeFp8Weights& w, bf16* out,
                        cudaStream_t stream, const Fp8Rows* x_fp8) {
  check_inputs(T, max_tokens_, dims_, x, w.shared_gate);
  if (T == 0) return;
  Carver carver{static_cast<char*>(scratch_)};
  const ExpertWeights<uint8_t> ew{
      w.router,      w.shared_gate,           w.experts_gate_up,    w.experts_down,         w.shared_gate_up,
      w.shared_down, w.experts_gate_up_scale, w.experts_down_scale, w.shared_gate_up_scale, w.shared_down_scale};
  moe_forward(dims_, carve(carver, dims_, max_tokens_), gemm, x, T, ew, out, stream, x_fp8);
}

}  // namespace ds::kernels::cuda
