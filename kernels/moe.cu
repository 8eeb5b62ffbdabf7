#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
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

// Batches up to this many tokens run the experts through grouped_skinny_gemm (measured on the H100,
// 35B-A3B layer, `moe_bench`: T = 1 81 vs 100 µs with the tile kernel, 8: 207 vs 242, 32: 490 vs
// 514, FP8 32: 431 vs 469; at 64 the tile kernel is faster: 664 vs 676, FP8 607 vs 704).
constexpr int64_t kMaxSkinnyTokens = 32;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("MoeRunner: ") + what + ": " + cudaGetErrorString(err));
}

// One warp per token: softmax over E logits, k rounds of warp argmax (lower expert id on ties),
// renormalisation. Lane l owns experts l, l+32, ... (at most 32 of them: E <= 1024). A NaN logit
// counts as -inf (see cpu::moe_route): comparisons stay a total order, so every lane agrees on each
// round's expert and the k ids are distinct whatever the router produced.
__global__ void route_kernel(const float* logits, int64_t T, int64_t E, int64_t k, bool norm_topk_prob,
                             int32_t* topk_ids, float* topk_weights) {
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (t >= T) return;
  const float* row = logits + t * E;
  const auto logit = [&](int64_t e) { return isnan(row[e]) ? -INFINITY : row[e]; };
  float mx = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) mx = fmaxf(mx, logit(e));
  for (int offset = 16; offset > 0; offset >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
  float sum = 0.f;
  for (int64_t e = lane; e < E; e += 32) sum += expf(logit(e) - mx);
  sum = cuda_utils::warp_sum(sum);

  uint32_t taken = 0;  // bit i: expert lane + 32·i already chosen
  float picked_sum = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    float best = -INFINITY;
    int32_t best_e = INT32_MAX;
    for (int64_t i = 0; lane + 32 * i < E; ++i) {
      const int64_t e = lane + 32 * i;
      if (!(taken >> i & 1u) && (logit(e) > best || best_e == INT32_MAX)) {
        best = logit(e);
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
    if (lane == 0) {
      topk_ids[t * k + j] = best_e;
      topk_weights[t * k + j] = w;
    }
  }
  if (norm_topk_prob && lane == 0) {
    for (int64_t j = 0; j < k; ++j) topk_weights[t * k + j] /= picked_sum;
  }
}

// Counting sort of the T·k (token, slot) pairs by expert, in one block. Writes
// sorted_pairs[position] = pair, position_of[pair] = position, and for the grouped GEMMs
// row_offsets [E+1] (expert e owns sorted rows [row_offsets[e], row_offsets[e+1])), tile_offsets
// [E+1] (prefix sums of ceil(count / 64)) and active_experts [slots] (the experts with rows,
// ascending, then -1).
__global__ void sort_by_expert_kernel(const int32_t* topk_ids, int64_t pairs, int64_t E, int32_t* row_offsets,
                                      int32_t* tile_offsets, int32_t* active_experts, int64_t slots,
                                      int32_t* sorted_pairs, int32_t* position_of) {
  extern __shared__ int32_t cursor[];  // [E]
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) cursor[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) atomicAdd(&cursor[topk_ids[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t offset = 0, tiles = 0;
    int64_t active = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int32_t n = cursor[e];
      row_offsets[e] = offset;
      tile_offsets[e] = tiles;
      cursor[e] = offset;
      offset += n;
      tiles += (n + gemm_tile::kBM - 1) / gemm_tile::kBM;
      if (n > 0) active_experts[active++] = int32_t(e);
    }
    row_offsets[E] = offset;
    tile_offsets[E] = tiles;
    for (; active < slots; ++active) active_experts[active] = -1;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    const int32_t pos = atomicAdd(&cursor[topk_ids[i]], 1);
    sorted_pairs[pos] = int32_t(i);
    position_of[i] = pos;
  }
}

// x_sorted[pos] = x[sorted_pairs[pos] / k], one block per position, 16-byte pieces (H % 8 == 0).
__global__ void gather_kernel(const __nv_bfloat16* x, int64_t H, int64_t k, const int32_t* sorted_pairs,
                              __nv_bfloat16* x_sorted) {
  const int64_t pos = blockIdx.x;
  const int64_t t = sorted_pairs[pos] / k;
  const uint4* src = reinterpret_cast<const uint4*>(x + t * H);
  uint4* dst = reinterpret_cast<uint4*>(x_sorted + pos * H);
  for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) dst[i] = src[i];
}

// All experts' GEMMs y_e = x_e·W_eᵀ in one launch: blockIdx.y walks the row tiles of all
// experts (tile_offsets), blockIdx.x the 64-column tiles of N. Surplus blocks exit at once.
template <typename WeightT>
__global__ void __launch_bounds__(gemm_tile::kThreads)
    grouped_gemm_kernel(const __nv_bfloat16* x, const WeightT* w, const float* scale, __nv_bfloat16* y, int64_t N,
                        int64_t K, const int32_t* row_offsets, const int32_t* tile_offsets, int64_t E) {
  __shared__ gemm_tile::SharedTiles sh;
  const int64_t tile = blockIdx.y;
  if (tile >= tile_offsets[E]) return;
  const int64_t e = cuda_utils::find_sequence(tile_offsets, E, tile);
  const int64_t row0 = row_offsets[e], rows = row_offsets[e + 1] - row0;
  const int64_t scales_per_expert =
      ((N + kFp8BlockSize - 1) / kFp8BlockSize) * ((K + kFp8BlockSize - 1) / kFp8BlockSize);
  gemm_tile::compute_tile(x + row0 * K, K, w + e * N * K, scale ? scale + e * scales_per_expert : nullptr, y + row0 * N,
                          N, rows, N, K, (tile - tile_offsets[e]) * gemm_tile::kBM,
                          int64_t(blockIdx.x) * gemm_tile::kBN, 0.f, sh);
}

// out[t] = Σ_j w[t][j] · y_sorted[position_of[t·k + j]] + sigmoid(shared_logit[t]) · shared_out[t].
__global__ void combine_kernel(const __nv_bfloat16* y_sorted, const int32_t* position_of, const float* topk_weights,
                               int64_t k, int64_t H, const __nv_bfloat16* shared_out, const float* shared_logit,
                               __nv_bfloat16* out) {
  const int64_t t = blockIdx.x;
  const float shared_scale = shared_out ? 1.f / (1.f + expf(-shared_logit[t])) : 0.f;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = shared_out ? shared_scale * __bfloat162float(shared_out[t * H + h]) : 0.f;
    for (int64_t j = 0; j < k; ++j) {
      acc += topk_weights[t * k + j] * __bfloat162float(y_sorted[int64_t(position_of[t * k + j]) * H + h]);
    }
    out[t * H + h] = __float2bfloat16(acc);
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

struct Buffers {
  float* logits;
  int32_t* topk_ids;
  float* topk_weights;
  int32_t* row_offsets;
  int32_t* tile_offsets;
  int32_t* active_experts;  // [min(E, max_tokens·k)]
  int32_t* sorted_pairs;
  int32_t* position_of;
  bf16* x_sorted;
  bf16* hidden;
  bf16* act;
  bf16* y_sorted;
  bf16* shared_hidden;
  bf16* shared_act;
  bf16* shared_out;
  float* shared_logit;
  Fp8Rows shared_act_fp8;  // shared_act quantized (batches up to kFp8RowsMaxTokens tokens)
};

Buffers carve(Carver& c, const MoeDims& d, int64_t max_tokens) {
  const size_t M = size_t(max_tokens), P = size_t(max_tokens * d.top_k), H = size_t(d.hidden);
  const size_t Ie = size_t(d.expert_intermediate), Is = size_t(d.shared_intermediate), E = size_t(d.num_experts);
  Buffers b;
  b.logits = c.take<float>(M * E);
  b.topk_ids = c.take<int32_t>(P);
  b.topk_weights = c.take<float>(P);
  b.row_offsets = c.take<int32_t>(E + 1);
  b.tile_offsets = c.take<int32_t>(E + 1);
  b.active_experts = c.take<int32_t>(std::min(E, P));
  b.sorted_pairs = c.take<int32_t>(P);
  b.position_of = c.take<int32_t>(P);
  b.x_sorted = c.take<bf16>(P * H);
  b.hidden = c.take<bf16>(P * 2 * Ie);
  b.act = c.take<bf16>(P * Ie);
  b.y_sorted = c.take<bf16>(P * H);
  b.shared_hidden = c.take<bf16>(M * 2 * Is);
  b.shared_act = c.take<bf16>(M * Is);
  b.shared_out = c.take<bf16>(M * H);
  b.shared_logit = c.take<float>(M);
  const size_t R = std::min<size_t>(M, kFp8RowsMaxTokens);
  if (Is % kFp8BlockSize == 0) b.shared_act_fp8 = {c.take<uint8_t>(R * Is), c.take<float>(R * Is / kFp8BlockSize)};
  return b;
}

}  // namespace

void moe_route(const float* logits, int64_t T, int64_t num_experts, int64_t top_k, bool norm_topk_prob,
               int32_t* topk_ids, float* topk_weights, cudaStream_t stream) {
  validate_moe_dims(MoeDims{1, num_experts, top_k, 1, 0, norm_topk_prob});
  if (T <= 0) return;
  const int threads = 256;
  route_kernel<<<unsigned((T * 32 + threads - 1) / threads), threads, 0, stream>>>(
      logits, T, num_experts, top_k, norm_topk_prob, topk_ids, topk_weights);
  check_launch("cuda::moe_route");
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

// All experts' GEMMs in one launch: for T <= kMaxSkinnyTokens (so as many rows per expert at most)
// the weight-streaming kernel over the experts hit (each expert's weights read once), else the
// tile kernel.
template <typename WeightT>
void grouped_gemm(const Buffers& b, const bf16* x, const WeightT* w, const float* scale, bf16* y, int64_t N, int64_t K,
                  int64_t T, int64_t pairs, int64_t E, cudaStream_t stream) {
  if (T <= kMaxSkinnyTokens && grouped_skinny_supports(T, K, K, x, w)) {
    grouped_skinny_gemm(x, K, w, scale, y, N, T, N, K, b.active_experts, std::min(E, pairs), b.row_offsets, stream);
    return;
  }
  using StoredT = std::conditional_t<sizeof(WeightT) == 1, uint8_t, __nv_bfloat16>;
  const int64_t max_tiles = (pairs + gemm_tile::kBM - 1) / gemm_tile::kBM + std::min(E, pairs);
  const dim3 grid(unsigned((N + gemm_tile::kBN - 1) / gemm_tile::kBN), unsigned(max_tiles));
  grouped_gemm_kernel<StoredT><<<grid, gemm_tile::kThreads, 0, stream>>>(
      as_nv(x), reinterpret_cast<const StoredT*>(w), scale, as_nv(y), N, K, b.row_offsets, b.tile_offsets, E);
  check_launch("MoeRunner grouped GEMM");
}

template <typename WeightT>
void moe_forward(const MoeDims& dims, const Buffers& b, GemmRunner& gemm, const bf16* x, int64_t T,
                 const ExpertWeights<WeightT>& w, bf16* out, cudaStream_t stream, const Fp8Rows* x_fp8 = nullptr) {
  const int64_t H = dims.hidden, E = dims.num_experts, k = dims.top_k, Ie = dims.expert_intermediate,
                Is = dims.shared_intermediate, pairs = T * k;
  gemm.gemm(x, H, w.router, b.logits, E, T, E, H, 0.f, stream);
  moe_route(b.logits, T, E, k, dims.norm_topk_prob, b.topk_ids, b.topk_weights, stream);
  sort_by_expert_kernel<<<1, 1024, sizeof(int32_t) * size_t(E), stream>>>(
      b.topk_ids, pairs, E, b.row_offsets, b.tile_offsets, b.active_experts, std::min(E, pairs), b.sorted_pairs,
      b.position_of);
  check_launch("MoeRunner sort_by_expert");
  gather_kernel<<<unsigned(pairs), 128, 0, stream>>>(as_nv(x), H, k, b.sorted_pairs, as_nv(b.x_sorted));
  check_launch("MoeRunner gather");
  grouped_gemm(b, b.x_sorted, w.gate_up, w.gate_up_scale, b.hidden, 2 * Ie, H, T, pairs, E, stream);
  silu_and_mul(b.hidden, 2 * Ie, b.act, Ie, pairs, Ie, stream);
  grouped_gemm(b, b.act, w.down, w.down_scale, b.y_sorted, H, Ie, T, pairs, E, stream);
  const bool has_shared = Is > 0;
  if (has_shared) {
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
    gemm.gemm(x, H, w.shared_gate, b.shared_logit, 1, T, 1, H, 0.f, stream);
  }
  combine_kernel<<<unsigned(T), 256, 0, stream>>>(as_nv(b.y_sorted), b.position_of, b.topk_weights, k, H,
                                                  has_shared ? as_nv(b.shared_out) : nullptr, b.shared_logit,
                                                  as_nv(out));
  check_launch("MoeRunner combine");
}

void check_tokens(int64_t T, int64_t max_tokens) {
  if (T < 0 || T > max_tokens) {
    throw std::invalid_argument("MoeRunner::forward: T " + std::to_string(T) + " outside [0, " +
                                std::to_string(max_tokens) + "]");
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
}

MoeRunner::~MoeRunner() { cudaFree(scratch_); }

void MoeRunner::forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeWeights<bf16>& w, bf16* out,
                        cudaStream_t stream) {
  check_tokens(T, max_tokens_);
  if (T == 0) return;
  Carver carver{static_cast<char*>(scratch_)};
  const ExpertWeights<bf16> ew{w.router,      w.shared_gate, w.experts_gate_up, w.experts_down, w.shared_gate_up,
                               w.shared_down, nullptr,       nullptr,           nullptr,        nullptr};
  moe_forward(dims_, carve(carver, dims_, max_tokens_), gemm, x, T, ew, out, stream);
}

void MoeRunner::forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeFp8Weights& w, bf16* out,
                        cudaStream_t stream, const Fp8Rows* x_fp8) {
  check_tokens(T, max_tokens_);
  if (T == 0) return;
  Carver carver{static_cast<char*>(scratch_)};
  const ExpertWeights<uint8_t> ew{
      w.router,      w.shared_gate,           w.experts_gate_up,    w.experts_down,         w.shared_gate_up,
      w.shared_down, w.experts_gate_up_scale, w.experts_down_scale, w.shared_gate_up_scale, w.shared_down_scale};
  moe_forward(dims_, carve(carver, dims_, max_tokens_), gemm, x, T, ew, out, stream, x_fp8);
}

}  // namespace ds::kernels::cuda
