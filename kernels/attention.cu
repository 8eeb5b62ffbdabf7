// Paged causal GQA attention on tensor cores. See attention.h for the contract; the design:
//
// * A block (4 warps) owns 64 "rows" of one sequence and one KV head, a row being a
//   (new token i, q head of the KV head's group) pair, r = i·group + g. So a K/V tile read from
//   the cache serves the whole GQA group, and a decode step (one token, `group` rows) is one block.
// * Q (64 × D), and double-buffered K and V tiles (BC keys × D) live in XOR-swizzled shared memory,
//   filled with cp.async straight from the pages (any page size: each key row is looked up).
// * Each warp owns 16 rows: S = Q·Kᵀ with mma.m16n8k16, causal/length mask, online softmax in the
//   log2 domain (fp32), P re-packed from the S accumulators into A fragments, O += P·V, O in registers.
// * Split-K: when the grid is too small for the GPU (decode, short batches), blockIdx.z splits
//   each sequence's key range; partial (O/l, m, l) go to the workspace and merge_kernel combines
//   them with log-sum-exp weights. Otherwise the gate and normalisation are applied in place.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/attention.h"
#include "kernels/attention_mma.cuh"
#include "kernels/cuda_utils.cuh"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using cuda_utils::check_launch;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerBlock = kWarps * 16;
constexpr int kMaxSplits = 64;
constexpr int64_t kMaxSplitTokens = 64;   // split-K only for batches of at most this many tokens
constexpr int64_t kMaxSplitRows = 1024;   // splits × tokens: bounds the workspace
constexpr int64_t kMinKeysPerSplit = 64;   // two key tiles: a block streams ~32 KB per tile slowly alone
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  const __nv_bfloat16* q;
  const __nv_bfloat16* gate;
  int64_t gate_row_stride, gate_head_stride;
  __nv_bfloat16* out;
  int64_t out_row_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  int64_t page_size, num_kv_heads;
  int page_shift;  // log2(page_size) where it is a power of two (the common case), else -1
  const int32_t* cu_q;
  const int32_t* kv_lens;
  const int32_t* page_table;
  int64_t max_pages_per_seq;
  int64_t num_tokens;
  int num_q_heads, group;
  float scale_log2;  // softmax scale · log2(e)
  int row_tiles_per_seq;
  int num_splits;
  int64_t split_keys;  // keys per split, a multiple of the key tile
  float* partial_o;    // [num_splits][num_tokens·Hq][D], each normalised by its own l
  float* partial_ml;   // [num_splits][num_tokens·Hq][2] = (m in log2 units, l)
};

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

template <int D, int BC>
struct Tile {
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kQChunks = kRowsPerBlock * kChunks;
  static constexpr int kKvChunks = BC * kChunks;
  static constexpr size_t kSmemBytes = size_t(kQChunks + 4 * kKvChunks) * 16;  // Q, K×2, V×2
};

// A thread's share of a K/V tile: the same 16-byte chunk column of every kThreads / kChunks-th key
// row (kv_chunk_column), so the per-block parts of a row's cache offset are computed once (KvSource).
template <int D>
__device__ __forceinline__ int kv_chunk_column() {
  constexpr int kChunks = D / 8;
  static_assert(kThreads % kChunks == 0, "a pass of the block's threads covers whole key rows");
  return threadIdx.x % kChunks;
}

struct KvSource {
  const int32_t* pages;  // this sequence's page table row
  int64_t page_stride;   // elements per page (all KV heads)
  int64_t head_chunk;    // offset of this KV head's first slot, plus this thread's chunk
};

template <int D>
__device__ __forceinline__ KvSource kv_source(const Params& p, int64_t s, int64_t kv_head) {
  return {p.page_table + s * p.max_pages_per_seq, p.num_kv_heads * p.page_size * D,
          kv_head * p.page_size * D + kv_chunk_column<D>() * 8};
}

// cp.async of keys [j0, j0 + BC) into one K and one V stage; rows at or past kv_end are
// zero-filled. A row's page and slot cost a 32-bit shift and mask (a division and a modulo where
// page_size is not a power of two) and its offset one multiply-add: the 64-bit division, modulo
// and nested offset products per chunk had been ~40% of the prefill kernel's instructions (ncu on
// the H200, 1 × 4096 tokens).
template <int D, int BC>
__device__ __forceinline__ void load_kv_tile(const Params& p, const KvSource& src, int64_t j0, int64_t kv_end,
                                             uint4* k_stage, uint4* v_stage) {
  constexpr int kChunks = Tile<D, BC>::kChunks;
  constexpr int kRowsPerPass = kThreads / kChunks;
  static_assert(BC % kRowsPerPass == 0, "passes cover the tile");
  const int chunk = kv_chunk_column<D>(), row0 = threadIdx.x / kChunks;
#pragma unroll
  for (int pass = 0; pass < BC / kRowsPerPass; ++pass) {
    const int row = row0 + pass * kRowsPerPass;
    const int64_t j = j0 + row;
    const bool valid = j < kv_end;
    int64_t offset = 0;
    if (valid) {
      const int32_t key = int32_t(j);  // sequence lengths are int32 (kv_lens)
      const int32_t page_index = p.page_shift >= 0 ? key >> p.page_shift : key / int32_t(p.page_size);
      const int32_t slot = p.page_shift >= 0 ? key & int32_t(p.page_size - 1) : key % int32_t(p.page_size);
      offset = src.pages[page_index] * src.page_stride + src.head_chunk + int64_t(slot) * D;
    }
    const int dst = mma::swizzled_chunk(row, chunk, kChunks);
    mma::cp_async_16(&k_stage[dst], p.k_cache + offset, valid);
    mma::cp_async_16(&v_stage[dst], p.v_cache + offset, valid);
  }
}

template <int D, int BC>
__global__ void __launch_bounds__(kThreads) attention_kernel(const Params p) {
  cuda_utils::allow_dependent_launch();  // o_proj starts streaming its weights
  using T = Tile<D, BC>;
  constexpr int kChunks = T::kChunks;
  extern __shared__ uint4 smem[];
  uint4* q_tile = smem;
  // Stage i's K tile, then V's (computed, not an array of pointers, which a run-time stage index
  // would put in local memory).
  auto k_tile_of = [&](int stage) { return smem + T::kQChunks + stage * T::kKvChunks; };
  auto v_tile_of = [&](int stage) { return smem + T::kQChunks + (2 + stage) * T::kKvChunks; };

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int64_t s = blockIdx.x / p.row_tiles_per_seq;
  // A sequence's last row tiles (the most keys under the causal mask) first, so that the light
  // ones fill the last wave instead of the heavy ones trailing it.
  const int64_t row0 = int64_t(p.row_tiles_per_seq - 1 - blockIdx.x % p.row_tiles_per_seq) * kRowsPerBlock;
  const int64_t kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int64_t q_start = p.cu_q[s], q_len = p.cu_q[s + 1] - q_start;
  const int64_t rows_total = q_len * p.group;
  if (row0 >= rows_total) return;
  const int64_t kv_len = p.kv_lens[s], prefix = kv_len - q_len;
  const int64_t last_row = std::min(rows_total, row0 + kRowsPerBlock) - 1;
  const int64_t kv_begin = int64_t(split) * p.split_keys;
  const int64_t kv_end = std::min(prefix + last_row / p.group + 1, kv_begin + p.split_keys);

  // Q rows -> shared (zeros past rows_total).
  for (int i = threadIdx.x; i < T::kQChunks; i += kThreads) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int64_t r = row0 + row;
    const bool valid = r < rows_total;
    const int64_t token = q_start + (valid ? r / p.group : 0);
    const int64_t head = kv_head * p.group + (valid ? r % p.group : 0);
    mma::cp_async_16(&q_tile[mma::swizzled_chunk(row, chunk, kChunks)],
                     p.q + (token * p.num_q_heads + head) * D + chunk * 8, valid);
  }
  const int num_tiles = kv_end > kv_begin ? int((kv_end - kv_begin + BC - 1) / BC) : 0;
  const KvSource kv_src = kv_source<D>(p, s, kv_head);
  if (num_tiles > 0) load_kv_tile<D, BC>(p, kv_src, kv_begin, kv_end, k_tile_of(0), v_tile_of(0));
  mma::cp_async_commit();

  // This thread's two rows (g and g + 8 of the warp's 16) and their exclusive key limits.
  int64_t row_of[2], limit[2];
  for (int h = 0; h < 2; ++h) {
    row_of[h] = row0 + warp * 16 + g + h * 8;
    limit[h] = row_of[h] < rows_total ? std::min(prefix + row_of[h] / p.group + 1, kv_end) : kv_end;
  }
  const bool warp_active = row0 + warp * 16 < rows_total;
  // Keys below every limit of the warp's rows need no mask: only tiles from here on are masked
  // (the causal diagonal and the range's end).
  const int64_t unmasked_end = kv_begin + __reduce_min_sync(0xffffffffu, int(std::min(limit[0], limit[1]) - kv_begin));

  // ldmatrix addresses: Q's A fragments and V's trans-loaded ones at the lanes of a_fragment_chunk,
  // K's at those of b_fragment_chunk; a stage is a fixed byte offset from stage 0.
  const uint32_t smem_base = mma::smem_address(smem);
  const mma::FragmentLanes q_lanes = mma::a_fragment_lanes(smem_base, lane, kChunks);
  const mma::FragmentLanes k_lanes = mma::b_fragment_lanes(mma::smem_address(k_tile_of(0)), lane, kChunks);
  const mma::FragmentLanes v_lanes = mma::a_fragment_lanes(mma::smem_address(v_tile_of(0)), lane, kChunks);
  constexpr uint32_t kStageBytes = T::kKvChunks * 16;

  float o[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile & 1;
    const int64_t j0 = kv_begin + int64_t(tile) * BC;
    if (tile + 1 < num_tiles) {
      load_kv_tile<D, BC>(p, kv_src, j0 + BC, kv_end, k_tile_of(stage ^ 1), v_tile_of(stage ^ 1));
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();

    if (warp_active) {
      const uint32_t stage_offset = stage * kStageBytes;
      float sc[BC / 8][4];
#pragma unroll
      for (int nt = 0; nt < BC / 8; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        uint32_t a[4];
        mma::ldmatrix_x4(a, mma::fragment_address(q_lanes, warp * 16, ks, kChunks));
#pragma unroll
        for (int np = 0; np < BC / 16; ++np) {
          uint32_t b[4];
          mma::ldmatrix_x4(b, mma::fragment_address(k_lanes, np * 16, ks, kChunks, stage_offset));
          mma::mma_bf16(sc[2 * np], a, b[0], b[1]);
          mma::mma_bf16(sc[2 * np + 1], a, b[2], b[3]);
        }
      }
      // Mask (tiles reaching past unmasked_end only), scale to log2 units, online softmax.
      const bool masked = j0 + BC > unmasked_end;
      const int key_limit[2] = {int(limit[0] - j0), int(limit[1] - j0)};  // in this tile's keys
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e >> 1;
          const int key = nt * 8 + 2 * c + (e & 1);
          sc[nt][e] = !masked || key < key_limit[h] ? sc[nt][e] * p.scale_log2 : -INFINITY;
          tile_max[h] = fmaxf(tile_max[h], sc[nt][e]);
        }
      }
      float alpha[2], m_use[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
        const float m_new = fmaxf(m[h], tile_max[h]);
        m_use[h] = m_new == -INFINITY ? 0.f : m_new;  // no key seen yet: keep exp2 finite
        alpha[h] = exp2f(m[h] - m_use[h]);
        m[h] = m_new;
        l[h] *= alpha[h];
      }
#pragma unroll
      for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          sc[nt][e] = exp2f(sc[nt][e] - m_use[e >> 1]);
          l[e >> 1] += sc[nt][e];
        }
      }
      // Rescale O only when a row's running max moved (D/2 multiplies per thread; once the max has
      // settled, most tiles of a long prompt leave every row's alpha at 1).
      if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) {
          o[nt][0] *= alpha[0];
          o[nt][1] *= alpha[0];
          o[nt][2] *= alpha[1];
          o[nt][3] *= alpha[1];
        }
      }
      // O += P·V: the S accumulators of key n-tiles 2kk, 2kk+1 are the A fragment of k-step kk.
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) {
        const uint32_t a[4] = {mma::pack_bf16x2(sc[2 * kk][0], sc[2 * kk][1]),
                               mma::pack_bf16x2(sc[2 * kk][2], sc[2 * kk][3]),
                               mma::pack_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                               mma::pack_bf16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b[4];
          mma::ldmatrix_x4_trans(b, mma::fragment_address(v_lanes, kk * 16, dp, kChunks, stage_offset));
          mma::mma_bf16(o[2 * dp], a, b[0], b[1]);
          mma::mma_bf16(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage just read is refilled next iteration
  }
  mma::cp_async_wait<0>();  // no tiles (an empty split): the Q copy is still in flight
  if (!warp_active) return;

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t r = row_of[h];
    if (r >= rows_total) continue;
    const int64_t token = q_start + r / p.group, head = kv_head * p.group + r % p.group;
    const float inv_l = l[h] > 0.f ? 1.f / l[h] : 0.f;
    if (p.num_splits > 1) {
      const int64_t row = (int64_t(split) * p.num_tokens + token) * p.num_q_heads + head;
      float* dst = p.partial_o + row * D;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        *reinterpret_cast<float2*>(dst + nt * 8 + 2 * c) = make_float2(o[nt][2 * h] * inv_l, o[nt][2 * h + 1] * inv_l);
      }
      if (c == 0) *reinterpret_cast<float2*>(p.partial_ml + row * 2) = make_float2(m[h], l[h]);
    } else {
      __nv_bfloat16* dst = p.out + token * p.out_row_stride + head * D;
      const __nv_bfloat16* gate = p.gate ? p.gate + token * p.gate_row_stride + head * p.gate_head_stride : nullptr;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        const int d = nt * 8 + 2 * c;
        float v0 = o[nt][2 * h] * inv_l, v1 = o[nt][2 * h + 1] * inv_l;
        if (gate) {
          v0 *= sigmoid(__bfloat162float(gate[d]));
          v1 *= sigmoid(__bfloat162float(gate[d + 1]));
        }
        dst[d] = __float2bfloat16(v0);
        dst[d + 1] = __float2bfloat16(v1);
      }
    }
  }
}

// One block of D threads per (token, q head): log-sum-exp merge of the splits, then the gate.
template <int D>
__global__ void __launch_bounds__(D) merge_kernel(const Params p) {
  cuda_utils::allow_dependent_launch();  // o_proj starts streaming its weights
  const int64_t row = blockIdx.x;  // token · Hq + head
  const int64_t token = row / p.num_q_heads, head = row % p.num_q_heads;
  const int64_t stride = p.num_tokens * p.num_q_heads;
  float m_max = -INFINITY;
  for (int sp = 0; sp < p.num_splits; ++sp) m_max = fmaxf(m_max, p.partial_ml[(sp * stride + row) * 2]);
  float acc = 0.f, weight_sum = 0.f;
  for (int sp = 0; sp < p.num_splits; ++sp) {
    const float l = p.partial_ml[(sp * stride + row) * 2 + 1];
    if (l == 0.f) continue;  // a split past this row's causal limit
    const float w = l * exp2f(p.partial_ml[(sp * stride + row) * 2] - m_max);
    acc += w * p.partial_o[(sp * stride + row) * D + threadIdx.x];
    weight_sum += w;
  }
  float v = weight_sum > 0.f ? acc / weight_sum : 0.f;
  if (p.gate) v *= sigmoid(__bfloat162float(p.gate[token * p.gate_row_stride + head * p.gate_head_stride + threadIdx.x]));
  p.out[token * p.out_row_stride + head * D + threadIdx.x] = __float2bfloat16(v);
}

// Thread per 16-byte chunk of the new keys and values.
__global__ void write_kv_kernel(const __nv_bfloat16* k, int64_t ldk, const __nv_bfloat16* v, int64_t ldv,
                                const int32_t* cu_q, const int32_t* kv_lens, const int32_t* page_table,
                                int64_t max_pages_per_seq, int64_t num_seqs, int64_t num_tokens,
                                __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, int64_t page_size, int64_t num_kv_heads,
                                int64_t head_dim) {
  const int64_t chunks_per_token = num_kv_heads * head_dim / 8;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= num_tokens * chunks_per_token) return;
  const int64_t t = idx / chunks_per_token, within = idx % chunks_per_token;
  const int64_t h = within / (head_dim / 8), d = (within % (head_dim / 8)) * 8;
  const int64_t s = cuda_utils::find_sequence(cu_q, num_seqs, t);
  const int64_t pos = kv_lens[s] - (cu_q[s + 1] - cu_q[s]) + (t - cu_q[s]);
  const int64_t page = page_table[s * max_pages_per_seq + pos / page_size];
  const int64_t dst = ((page * num_kv_heads + h) * page_size + pos % page_size) * head_dim + d;
  *reinterpret_cast<uint4*>(k_cache + dst) = *reinterpret_cast<const uint4*>(k + t * ldk + h * head_dim + d);
  *reinterpret_cast<uint4*>(v_cache + dst) = *reinterpret_cast<const uint4*>(v + t * ldv + h * head_dim + d);
}

void check_cache(const PagedKvCache<bf16>& cache, const char* op) {
  if (cache.k == nullptr || cache.v == nullptr || cache.page_size <= 0 || cache.num_kv_heads <= 0 ||
      cache.num_pages <= 0 || (cache.head_dim != 128 && cache.head_dim != 256)) {
    throw std::invalid_argument(std::string(op) + ": bad KV cache (head_dim " + std::to_string(cache.head_dim) +
                                " must be 128 or 256; page_size " + std::to_string(cache.page_size) + ", kv heads " +
                                std::to_string(cache.num_kv_heads) + ")");
  }
}

template <int D, int BC>
void launch(const Params& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t smem = Tile<D, BC>::kSmemBytes;
  cuda_utils::allow_shared_memory<attention_kernel<D, BC>>(smem, "cuda::attention");
  attention_kernel<D, BC><<<grid, kThreads, smem, stream>>>(p);
  check_launch("cuda::attention");
  if (p.num_splits > 1) {
    merge_kernel<D><<<unsigned(p.num_tokens * p.num_q_heads), D, 0, stream>>>(p);
    check_launch("cuda::attention merge");
  }
}

}  // namespace

void write_kv(const bf16* k, int64_t ldk, const bf16* v, int64_t ldv, const AttentionBatch& batch,
              const PagedKvCache<bf16>& cache, cudaStream_t stream) {
  check_cache(cache, "cuda::write_kv");
  if (ldk % 8 != 0 || ldv % 8 != 0 || !cuda_utils::is_aligned(k, 16) || !cuda_utils::is_aligned(v, 16)) {
    throw std::invalid_argument("cuda::write_kv: k/v rows must be 16-byte aligned (ldk " + std::to_string(ldk) +
                                ", ldv " + std::to_string(ldv) + ")");
  }
  if (batch.num_tokens <= 0) return;
  const int64_t n = batch.num_tokens * cache.num_kv_heads * cache.head_dim / 8;
  write_kv_kernel<<<cuda_utils::grid_dim(n, 256), 256, 0, stream>>>(
      as_nv(k), ldk, as_nv(v), ldv, batch.cu_q, batch.kv_lens, batch.page_table, batch.max_pages_per_seq,
      batch.num_seqs, batch.num_tokens, as_nv(cache.k), as_nv(cache.v), cache.page_size, cache.num_kv_heads,
      cache.head_dim);
  check_launch("cuda::write_kv");
}

size_t attention_workspace_bytes(int64_t num_tokens, int64_t num_q_heads, int64_t head_dim) {
  const int64_t split_rows = std::min(num_tokens * kMaxSplits, kMaxSplitRows);
  return size_t(split_rows * num_q_heads) * size_t(head_dim + 2) * sizeof(float);
}

void attention(const AttentionIo<bf16>& io, const AttentionBatch& batch, const PagedKvCache<bf16>& cache,
               void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_cache(cache, "cuda::attention");
  if (io.num_q_heads <= 0 || io.num_q_heads % cache.num_kv_heads != 0) {
    throw std::invalid_argument("cuda::attention: num_q_heads " + std::to_string(io.num_q_heads) +
                                " is not a positive multiple of num_kv_heads " + std::to_string(cache.num_kv_heads));
  }
  if (batch.num_tokens <= 0 || batch.num_seqs <= 0) return;
  if (batch.max_q_len <= 0 || batch.max_kv_len < batch.max_q_len) {
    throw std::invalid_argument("cuda::attention: batch.max_q_len / max_kv_len must bound the batch (got " +
                                std::to_string(batch.max_q_len) + " / " + std::to_string(batch.max_kv_len) + ")");
  }
  const int D = int(cache.head_dim);
  const int BC = D == 256 ? 32 : 64;
  const int group = int(io.num_q_heads / cache.num_kv_heads);

  Params p{};
  p.q = as_nv(io.q);
  p.gate = io.gate ? as_nv(io.gate) : nullptr;
  p.gate_row_stride = io.gate_row_stride;
  p.gate_head_stride = io.gate_head_stride;
  p.out = as_nv(io.out);
  p.out_row_stride = io.out_row_stride;
  p.k_cache = as_nv(cache.k);
  p.v_cache = as_nv(cache.v);
  p.page_size = cache.page_size;
  p.page_shift = (cache.page_size & (cache.page_size - 1)) == 0 ? __builtin_ctzll(uint64_t(cache.page_size)) : -1;
  p.num_kv_heads = cache.num_kv_heads;
  p.cu_q = batch.cu_q;
  p.kv_lens = batch.kv_lens;
  p.page_table = batch.page_table;
  p.max_pages_per_seq = batch.max_pages_per_seq;
  p.num_tokens = batch.num_tokens;
  p.num_q_heads = int(io.num_q_heads);
  p.group = group;
  p.scale_log2 = io.scale * kLog2e;
  p.row_tiles_per_seq = int((batch.max_q_len * group + kRowsPerBlock - 1) / kRowsPerBlock);

  // Split the key range when the grid would leave SMs idle (two blocks fit on an SM; aim for two
  // waves) and the workspace allows it.
  const int64_t blocks = batch.num_seqs * p.row_tiles_per_seq * cache.num_kv_heads;
  static const int sms = cuda_utils::current_device_sm_count("cuda::attention");
  int64_t splits = 1;
  if (batch.num_tokens <= kMaxSplitTokens && blocks < 2 * sms) {
    splits = std::min<int64_t>({(4 * sms + blocks - 1) / blocks, (batch.max_kv_len + kMinKeysPerSplit - 1) / kMinKeysPerSplit,
                                kMaxSplits, kMaxSplitRows / batch.num_tokens});
    const size_t per_split = size_t(batch.num_tokens * io.num_q_heads) * size_t(D + 2) * sizeof(float);
    splits = std::min<int64_t>(splits, int64_t(workspace_bytes / per_split));
    splits = std::max<int64_t>(splits, 1);
  }
  p.split_keys = ((batch.max_kv_len + splits - 1) / splits + BC - 1) / BC * BC;
  p.num_splits = int((batch.max_kv_len + p.split_keys - 1) / p.split_keys);
  if (p.num_splits > 1) {
    p.partial_o = static_cast<float*>(workspace);
    p.partial_ml = p.partial_o + size_t(p.num_splits) * size_t(batch.num_tokens * io.num_q_heads) * size_t(D);
  }
  const dim3 grid(unsigned(batch.num_seqs * p.row_tiles_per_seq), unsigned(cache.num_kv_heads), unsigned(p.num_splits));
  if (D == 256) {
    launch<256, 32>(p, grid, stream);
  } else {
    launch<128, 64>(p, grid, stream);
  }
}

}  // namespace ds::kernels::cuda
