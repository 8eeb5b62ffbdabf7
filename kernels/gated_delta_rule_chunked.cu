// Prefill "v2": the chunked (WY / UT-transform) gated delta rule on tensor cores (TF32 WMMA,
// fp32 accumulation), chunk 64, dk = dv = 128.
//
// With chunk-local cumulative log decay γ_i, A_ij = β_i e^{γ_i-γ_j} k̂_i·k̂_j (j < i) and
// T = (I + A)⁻¹ (see cpu::gated_delta_rule_prefill_chunked for the derivation):
//   W_k = T diag(β e^γ) K̂,  W_v = T diag(β) V                              (chunk-local)
//   U = W_v − W_k Mᵀ;  O = Q_γ Mᵀ + P U;  M ← e^{γ_L} M + Uᵀ K_d             (sequential in M)
// with Q_γ = diag(e^γ) Q̂, P_ij = e^{γ_i-γ_j} q̂_i·k̂_j (j <= i), K_d = diag(e^{γ_L-γ}) K̂.
//
// Kernel 1 (prepare_chunk_kernel), one block per (chunk, value head), fully parallel: k̂k̂ᵀ and
// q̂k̂ᵀ on tensor cores, W by forward substitution (one column per thread, in registers), then
// W_k, W_v, Q_γ, K_d, P and e^{γ_L} to the workspace. Kernel 2 (scan_chunks_kernel), one block per
// (sequence, value head, 32-row slice of the state), walks the sequence's chunks in order with its
// state slice in shared memory; state rows are independent, so slices need no communication.
//
// Chunks are aligned to each sequence's start. Sequence s's chunks use workspace slots
// first_chunk(s) = cu_seqlens[s] / 64 + s onwards: non-overlapping, at most T/64 + num_seqs in all.
#include <mma.h>

#include <stdexcept>

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule.h"
#include "kernels/gated_delta_rule_detail.cuh"
#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cuda {

namespace {

namespace wmma = nvcuda::wmma;
using cuda_utils::as_nv;
using gdr::kHeadDim;

constexpr int kChunk = 64;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSlice = 32;  // state rows per scan block
constexpr int kTile = 16;   // WMMA tile edge (m16n16k8 TF32)
constexpr int kTileK = 8;
static_assert(kThreads == 2 * kHeadDim, "kernel 1 substitutes one column of [W_k | W_v] per thread");
// Shared-memory row strides, padded by 4 floats so that the rows of a WMMA fragment fall into
// different banks (unpadded 128-, 64- and 32-float rows all start in bank 0).
constexpr int kLd128 = kHeadDim + 4;
constexpr int kLd64 = kChunk + 4;
constexpr int kLdSlice = kSlice + 4;

// Workspace of one (chunk, head), in floats.
constexpr int64_t kWkOffset = 0;
constexpr int64_t kWvOffset = kWkOffset + kChunk * kHeadDim;
constexpr int64_t kQgOffset = kWvOffset + kChunk * kHeadDim;
constexpr int64_t kKdOffset = kQgOffset + kChunk * kHeadDim;
constexpr int64_t kPOffset = kKdOffset + kChunk * kHeadDim;
constexpr int64_t kDecayOffset = kPOffset + kChunk * kChunk;
constexpr int64_t kChunkFloats = kDecayOffset + 8;  // keeps every block 32-byte aligned

__host__ __device__ inline int64_t first_chunk(const int32_t* cu_seqlens, int64_t s) {
  return cu_seqlens[s] / kChunk + s;
}

int64_t max_chunk_slots(int64_t num_tokens, int64_t num_seqs) { return num_tokens / kChunk + num_seqs; }

using FragA = wmma::fragment<wmma::matrix_a, kTile, kTile, kTileK, wmma::precision::tf32, wmma::row_major>;
using FragAcol = wmma::fragment<wmma::matrix_a, kTile, kTile, kTileK, wmma::precision::tf32, wmma::col_major>;
using FragBrow = wmma::fragment<wmma::matrix_b, kTile, kTile, kTileK, wmma::precision::tf32, wmma::row_major>;
using FragBcol = wmma::fragment<wmma::matrix_b, kTile, kTile, kTileK, wmma::precision::tf32, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kTile, kTile, kTileK, float>;

template <typename Frag>
__device__ __forceinline__ void load_tf32(Frag& f, const float* p, unsigned ld) {
  wmma::load_matrix_sync(f, p, ld);
#pragma unroll
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

// acc += A[m0.., 0..K) · B[0..K), n0..) with A row-major (lda) or col-major (A[m][k] = At[k][m],
// At row-major with stride lda), and B row-major (ldb) or col-major (B[k][n] = Bt[n][k]). K is a
// compile-time constant so the loop unrolls and the fragment loads run ahead of the MMAs.
template <typename AFrag, typename BFrag, int K>
__device__ __forceinline__ void mma_tile(FragC& acc, const float* A, unsigned lda, const float* B, unsigned ldb, int m0,
                                         int n0) {
  constexpr bool kAColMajor = std::is_same_v<AFrag, FragAcol>;
  constexpr bool kBColMajor = std::is_same_v<BFrag, FragBcol>;
#pragma unroll
  for (int k = 0; k < K; k += kTileK) {
    AFrag a;
    BFrag b;
    load_tf32(a, kAColMajor ? A + k * lda + m0 : A + m0 * lda + k, lda);
    load_tf32(b, kBColMajor ? B + n0 * ldb + k : B + k * ldb + n0, ldb);
    wmma::mma_sync(acc, a, b, acc);
  }
}

struct ChunkedParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  int64_t qkv_stride;
  const float* g;
  const float* beta;
  float* state_pool;
  GdnVarlenBatch batch;
  int64_t num_v_heads;
  int64_t ratio;
  float* workspace;
  __nv_bfloat16* out;
};

// Shared memory of kernel 1, in floats.
struct PrepareSmem {
  float kn[kChunk * kLd128];  // k̂, later β e^γ k̂
  float qn[kChunk * kLd128];  // q̂ (scaled by dk^-0.5)
  float kk[kChunk * kLd64];   // k̂ k̂ᵀ, then A
  float qk[kChunk * kLd64];   // q̂ k̂ᵀ
  float gamma[kChunk];
  float beta[kChunk];
};

// Largest s with first_chunk(s) <= c (first_chunk is increasing in s).
__device__ int64_t sequence_of_chunk(const GdnVarlenBatch& batch, int64_t c) {
  int64_t lo = 0, hi = batch.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (first_chunk(batch.cu_seqlens, mid) <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// grid (max chunk slots, Hv).
__global__ void __launch_bounds__(kThreads, 2) prepare_chunk_kernel(ChunkedParams p) {
  extern __shared__ __align__(128) float4 smem_raw[];
  PrepareSmem& sm = *reinterpret_cast<PrepareSmem*>(smem_raw);
  const int64_t c = blockIdx.x, h = blockIdx.y;
  const int64_t s = sequence_of_chunk(p.batch, c);
  const int64_t t0 = p.batch.cu_seqlens[s] + (c - first_chunk(p.batch.cu_seqlens, s)) * kChunk;
  const int64_t seq_end = p.batch.cu_seqlens[s + 1];
  if (t0 >= seq_end) return;  // an unused slot
  const int L = int(seq_end - t0 < kChunk ? seq_end - t0 : kChunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kh = h / p.ratio;
  float* ws = p.workspace + (c * p.num_v_heads + h) * kChunkFloats;

  // 1. Normalised q, k rows (zeros past the chunk's end) and gates. Each warp owns rows
  //    warp, warp + 8, ...: all its loads are issued before any is used.
  constexpr int kRowsPerWarp = kChunk / kWarps;
  gdr::Lane4 kraw[kRowsPerWarp], qraw[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + i * kWarps;
    kraw[i] = qraw[i] = gdr::Lane4{};
    if (r < L) {
      const int64_t row = (t0 + r) * p.qkv_stride + kh * kHeadDim;
      kraw[i] = gdr::load_lane4(p.k + row);
      qraw[i] = gdr::load_lane4(p.q + row);
    }
  }
  if (threadIdx.x < kChunk) {
    const int r = threadIdx.x;
    sm.beta[r] = r < L ? p.beta[(t0 + r) * p.num_v_heads + h] : 0.f;
    sm.gamma[r] = r < L ? p.g[(t0 + r) * p.num_v_heads + h] : 0.f;
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + i * kWarps;
    const gdr::Lane4 kr = gdr::l2_normalized(kraw[i], 1.f);
    const gdr::Lane4 qr = gdr::l2_normalized(qraw[i], rsqrtf(float(kHeadDim)));
#pragma unroll
    for (int j = 0; j < gdr::kPerLane; ++j) {
      sm.kn[r * kLd128 + lane * gdr::kPerLane + j] = kr.v[j];
      sm.qn[r * kLd128 + lane * gdr::kPerLane + j] = qr.v[j];
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.f;
    for (int r = 0; r < kChunk; ++r) sm.gamma[r] = acc += sm.gamma[r];
  }
  // 2. k̂ k̂ᵀ and q̂ k̂ᵀ (64×64 each: 16 tiles, 2 per warp per product).
  for (int tile = warp; tile < 16; tile += kWarps) {
    const int m0 = (tile / 4) * kTile, n0 = (tile % 4) * kTile;
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    mma_tile<FragA, FragBcol, kHeadDim>(acc, sm.kn, kLd128, sm.kn, kLd128, m0, n0);
    wmma::store_matrix_sync(sm.kk + m0 * kLd64 + n0, acc, kLd64, wmma::mem_row_major);
    wmma::fill_fragment(acc, 0.f);
    mma_tile<FragA, FragBcol, kHeadDim>(acc, sm.qn, kLd128, sm.kn, kLd128, m0, n0);
    wmma::store_matrix_sync(sm.qk + m0 * kLd64 + n0, acc, kLd64, wmma::mem_row_major);
  }
  __syncthreads();
  // 3. A_ij = β_i e^{γ_i-γ_j} k̂_i·k̂_j for j < i, else 0 (in place of k̂k̂ᵀ).
  for (int i = threadIdx.x; i < kChunk * kChunk; i += kThreads) {
    const int r = i / kChunk, col = i % kChunk;
    float& a = sm.kk[r * kLd64 + col];
    a = col < r ? sm.beta[r] * __expf(sm.gamma[r] - sm.gamma[col]) * a : 0.f;
  }
  // 4. Q_γ, K_d and the masked decayed q̂k̂ᵀ go to the workspace; k̂ becomes β e^γ k̂ in place.
  const float gamma_last = sm.gamma[L - 1];
  for (int i = threadIdx.x; i < kChunk * kHeadDim; i += kThreads) {
    const int r = i / kHeadDim, c = i % kHeadDim;
    const float gr = sm.gamma[r];
    ws[kQgOffset + i] = __expf(gr) * sm.qn[r * kLd128 + c];
    ws[kKdOffset + i] = r < L ? __expf(gamma_last - gr) * sm.kn[r * kLd128 + c] : 0.f;
    sm.kn[r * kLd128 + c] *= sm.beta[r] * __expf(gr);
  }
  for (int i = threadIdx.x; i < kChunk * kChunk; i += kThreads) {
    const int r = i / kChunk, col = i % kChunk;
    ws[kPOffset + i] = col <= r ? __expf(sm.gamma[r] - sm.gamma[col]) * sm.qk[r * kLd64 + col] : 0.f;
  }
  if (threadIdx.x == 0) ws[kDecayOffset] = __expf(gamma_last);
  __syncthreads();
  // 5. (I + A) W = B by forward substitution, one column of W = [W_k | W_v] per thread, held in
  //    registers: w_i = b_i − Σ_{j<i} A_ij w_j with B = [β e^γ K̂ | β V]. No synchronisation needed.
  const int col = threadIdx.x;  // 0..255: columns of W_k, then of W_v
  float w[kChunk];
  if (col < kHeadDim) {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) w[i] = sm.kn[i * kLd128 + col];
  } else {  // β v, straight from global memory (coalesced across the warp)
    const __nv_bfloat16* v = p.v + t0 * p.qkv_stride + h * kHeadDim + (col - kHeadDim);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) w[i] = i < L ? sm.beta[i] * __bfloat162float(v[i * p.qkv_stride]) : 0.f;
  }
#pragma unroll
  for (int i = 1; i < kChunk; ++i) {
    float acc = w[i];
#pragma unroll
    for (int j = 0; j < i; ++j) acc -= sm.kk[i * kLd64 + j] * w[j];
    w[i] = acc;
  }
  float* dst = ws + (col < kHeadDim ? kWkOffset + col : kWvOffset + (col - kHeadDim));
#pragma unroll
  for (int i = 0; i < kChunk; ++i) dst[i * kHeadDim] = w[i];
}

// Shared memory of kernel 2, in floats.
struct ScanSmem {
  float wk[kChunk * kLd128];
  float qg[kChunk * kLd128];
  float kd[kChunk * kLd128];
  float pm[kChunk * kLd64];
  float wv[kChunk * kLdSlice];  // W_v columns of this slice
  float m[kSlice * kLd128];     // state rows of this slice
  float u[kChunk * kLdSlice];
  float o[kChunk * kLdSlice];
};

// Asynchronous global → shared copies (cp.async, 16 bytes each, L2 only): issued by the whole
// block, waited for with wait_copies() before a __syncthreads().
__device__ __forceinline__ void copy_async_16(float* smem, const float* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `kPending` of this thread's most recent copy groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// A dense [rows][cols] block of global floats into shared rows of stride ld.
__device__ __forceinline__ void copy_block_async(float* dst, int ld, const float* src, int rows, int cols) {
  for (int i = threadIdx.x * 4; i < rows * cols; i += kThreads * 4)
    copy_async_16(dst + (i / cols) * ld + i % cols, src + i);
}

// The W_v columns [row0, row0 + kSlice) of a chunk's workspace.
__device__ __forceinline__ void copy_wv_slice_async(float* dst, const float* ws, int row0) {
  for (int i = threadIdx.x * 4; i < kChunk * kSlice; i += kThreads * 4) {
    copy_async_16(dst + (i / kSlice) * kLdSlice + i % kSlice,
                  ws + kWvOffset + (i / kSlice) * kHeadDim + row0 + i % kSlice);
  }
}

// grid (num_seqs, Hv, 128 / kSlice). Two phases per chunk, each a few independent MMA chains per
// warp; loads of chunk n+1's workspace overlap chunk n's math: each copy group is refilled as soon
// as its last reader is done and waited for just before its first reader.
__global__ void __launch_bounds__(kThreads) scan_chunks_kernel(ChunkedParams p) {
  extern __shared__ __align__(128) float4 smem_raw[];
  ScanSmem& sm = *reinterpret_cast<ScanSmem*>(smem_raw);
  const int64_t s = blockIdx.x, h = blockIdx.y;
  const int row0 = blockIdx.z * kSlice;
  const int warp = threadIdx.x / 32;
  const int64_t start = p.batch.cu_seqlens[s], end = p.batch.cu_seqlens[s + 1];
  const bool from_state = p.batch.has_initial_state == nullptr || p.batch.has_initial_state[s] != 0;
  float* state =
      p.state_pool + (int64_t(p.batch.slots[s]) * p.num_v_heads + h) * kHeadDim * kHeadDim + int64_t(row0) * kHeadDim;
  for (int i = threadIdx.x; i < kSlice * kHeadDim; i += kThreads) {
    sm.m[(i / kHeadDim) * kLd128 + i % kHeadDim] = from_state ? state[i] : 0.f;
  }

  const int64_t chunk0 = first_chunk(p.batch.cu_seqlens, s);
  const int64_t num_chunks = (end - start + kChunk - 1) / kChunk;
  auto chunk_ws = [&](int64_t n) { return p.workspace + ((chunk0 + n) * p.num_v_heads + h) * kChunkFloats; };
  // Copy group A: W_k, W_v, Q_γ (read in phase 1); group B: P, K_d (read in phase 2).
  auto copy_group_a = [&](const float* ws) {
    copy_block_async(sm.wk, kLd128, ws + kWkOffset, kChunk, kHeadDim);
    copy_wv_slice_async(sm.wv, ws, row0);
    copy_block_async(sm.qg, kLd128, ws + kQgOffset, kChunk, kHeadDim);
  };
  auto copy_group_b = [&](const float* ws) {
    copy_block_async(sm.pm, kLd64, ws + kPOffset, kChunk, kChunk);
    copy_block_async(sm.kd, kLd128, ws + kKdOffset, kChunk, kHeadDim);
  };
  if (num_chunks > 0) {
    copy_group_a(chunk_ws(0));
    commit_copies();
    copy_group_b(chunk_ws(0));
    commit_copies();
  }
  // Each warp owns one 16×16 tile of U and O (64 × kSlice) and two of the state slice.
  static_assert((kChunk / kTile) * (kSlice / kTile) == kWarps, "one U/O tile per warp");
  static_assert((kSlice / kTile) * (kHeadDim / kTile) == 2 * kWarps, "two state tiles per warp");
  constexpr int kSliceTiles = kSlice / kTile;
  const int m0 = (warp / kSliceTiles) * kTile, n0 = (warp % kSliceTiles) * kTile;
  int sm0[2], sn0[2];
  for (int t = 0; t < 2; ++t) {
    const int tile = warp + t * kWarps;
    sm0[t] = (tile / (kHeadDim / kTile)) * kTile;
    sn0[t] = (tile % (kHeadDim / kTile)) * kTile;
  }
  for (int64_t n = 0; n < num_chunks; ++n) {
    const int64_t t0 = start + n * kChunk;
    const int L = int(end - t0 < kChunk ? end - t0 : kChunk);
    const float* next = n + 1 < num_chunks ? chunk_ws(n + 1) : nullptr;
    const float decay = chunk_ws(n)[kDecayOffset];
    wait_copies<1>();  // group A of this chunk (group B may still be landing)
    __syncthreads();
    // Phase 1: U = W_v − W_k Mᵀ and the first half of O, Q_γ Mᵀ: two independent MMA chains that
    // share their B fragments (Mᵀ).
    FragC acc_o;
    {
      FragC acc_u;
      wmma::load_matrix_sync(acc_u, sm.wv + m0 * kLdSlice + n0, kLdSlice, wmma::mem_row_major);
      wmma::fill_fragment(acc_o, 0.f);
#pragma unroll
      for (int k = 0; k < kHeadDim; k += kTileK) {
        FragA wk, qg;
        FragBcol mt;
        load_tf32(wk, sm.wk + m0 * kLd128 + k, kLd128);
        load_tf32(qg, sm.qg + m0 * kLd128 + k, kLd128);
        load_tf32(mt, sm.m + n0 * kLd128 + k, kLd128);
        wmma::mma_sync(acc_o, qg, mt, acc_o);
#pragma unroll
        for (int i = 0; i < wk.num_elements; ++i) wk.x[i] = -wk.x[i];
        wmma::mma_sync(acc_u, wk, mt, acc_u);
      }
      wmma::store_matrix_sync(sm.u + m0 * kLdSlice + n0, acc_u, kLdSlice, wmma::mem_row_major);
    }
    wait_copies<0>();  // group B of this chunk
    __syncthreads();
    if (next != nullptr) copy_group_a(next);
    commit_copies();
    // Phase 2: O += P U and M ← e^{γ_L} M + Uᵀ K_d (each warp reads only its own state tiles, and
    // phase 1's reads of M are done): three independent MMA chains.
    {
      FragC acc_m[2];
      for (int t = 0; t < 2; ++t) {
        wmma::load_matrix_sync(acc_m[t], sm.m + sm0[t] * kLd128 + sn0[t], kLd128, wmma::mem_row_major);
#pragma unroll
        for (int i = 0; i < acc_m[t].num_elements; ++i) acc_m[t].x[i] *= decay;
      }
#pragma unroll
      for (int k = 0; k < kChunk; k += kTileK) {
        FragA pm;
        FragBrow u;
        load_tf32(pm, sm.pm + m0 * kLd64 + k, kLd64);
        load_tf32(u, sm.u + k * kLdSlice + n0, kLdSlice);
        wmma::mma_sync(acc_o, pm, u, acc_o);
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          FragAcol ut;
          FragBrow kd;
          load_tf32(ut, sm.u + k * kLdSlice + sm0[t], kLdSlice);
          load_tf32(kd, sm.kd + k * kLd128 + sn0[t], kLd128);
          wmma::mma_sync(acc_m[t], ut, kd, acc_m[t]);
        }
      }
      wmma::store_matrix_sync(sm.o + m0 * kLdSlice + n0, acc_o, kLdSlice, wmma::mem_row_major);
      for (int t = 0; t < 2; ++t) {
        wmma::store_matrix_sync(sm.m + sm0[t] * kLd128 + sn0[t], acc_m[t], kLd128, wmma::mem_row_major);
      }
    }
    __syncthreads();
    if (next != nullptr) copy_group_b(next);
    commit_copies();
    // Output rows of this chunk: 8 values (16 bytes of BF16) per thread.
    for (int i = threadIdx.x * 8; i < L * kSlice; i += kThreads * 8) {
      const int r = i / kSlice, col = i % kSlice;
      float vals[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) vals[j] = sm.o[r * kLdSlice + col + j];
      cuda_utils::store_vec<8>(p.out + ((t0 + r) * p.num_v_heads + h) * kHeadDim + row0 + col, vals);
    }
  }
  wait_copies<0>();
  __syncthreads();
  for (int i = threadIdx.x; i < kSlice * kHeadDim; i += kThreads)
    state[i] = sm.m[(i / kHeadDim) * kLd128 + i % kHeadDim];
}

}  // namespace

size_t gated_delta_rule_prefill_workspace_bytes(int64_t num_tokens, int64_t num_seqs, const GdnDims& dims) {
  return size_t(max_chunk_slots(num_tokens, num_seqs)) * size_t(dims.num_v_heads) * kChunkFloats * sizeof(float);
}

void gated_delta_rule_prefill_chunked(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                                      const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                      const GdnDims& dims, void* workspace, size_t workspace_bytes, bf16* out,
                                      cudaStream_t stream) {
  const char* op = "gated_delta_rule_prefill_chunked";
  check_cuda_head_dims(dims, op);
  check_row_stride(qkv_stride, dims.conv_dim(), op, "q/k/v");
  check_varlen_batch_shape(batch, op);
  if (qkv_stride % 8 != 0) throw std::invalid_argument(std::string(op) + ": qkv_stride must be a multiple of 8");
  if (workspace_bytes < gated_delta_rule_prefill_workspace_bytes(batch.num_tokens, batch.num_seqs, dims) ||
      !cuda_utils::is_aligned(workspace, 32)) {
    throw std::invalid_argument(std::string(op) +
                                ": workspace must be 32-byte aligned and hold "
                                "gated_delta_rule_prefill_workspace_bytes() bytes");
  }
  if (batch.num_seqs == 0) return;
  const ChunkedParams p{as_nv(q),
                        as_nv(k),
                        as_nv(v),
                        qkv_stride,
                        g,
                        beta,
                        state_pool,
                        batch,
                        dims.num_v_heads,
                        dims.ratio(),
                        static_cast<float*>(workspace),
                        as_nv(out)};
  if (batch.num_tokens > 0) {
    cuda_utils::allow_shared_memory<prepare_chunk_kernel>(sizeof(PrepareSmem), "gated_delta_rule_prefill_chunked");
    const dim3 grid(unsigned(max_chunk_slots(batch.num_tokens, batch.num_seqs)), unsigned(dims.num_v_heads));
    prepare_chunk_kernel<<<grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
    cuda_utils::check_launch("gated_delta_rule_prefill_chunked (prepare)");
  }
  cuda_utils::allow_shared_memory<scan_chunks_kernel>(sizeof(ScanSmem), "gated_delta_rule_prefill_chunked");
  const dim3 grid(unsigned(batch.num_seqs), unsigned(dims.num_v_heads), kHeadDim / kSlice);
  scan_chunks_kernel<<<grid, kThreads, sizeof(ScanSmem), stream>>>(p);
  cuda_utils::check_launch("gated_delta_rule_prefill_chunked (scan)");
}

void gated_delta_rule_prefill(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                              const float* beta, float* state_pool, const GdnVarlenBatch& batch, const GdnDims& dims,
                              void* workspace, size_t workspace_bytes, bf16* out, cudaStream_t stream) {
  // On short prompts the per-token recurrence beats the chunked form's fixed cost (two launches and
  // a whole 64-token chunk's preparation). gdn_prefill_bench, H100, Hk 16 Hv 32, one sequence:
  // recurrent / chunked = 20 / 43 µs at T = 16, 35 / 43 at 32, 63 / 44 at 64.
  constexpr int64_t kRecurrentMaxSeqLen = 32;
  const int64_t longest = batch.max_seq_len > 0 ? batch.max_seq_len : batch.num_tokens;
  const bool have_workspace = workspace != nullptr && workspace_bytes >= gated_delta_rule_prefill_workspace_bytes(
                                                                             batch.num_tokens, batch.num_seqs, dims);
  if (have_workspace && longest > kRecurrentMaxSeqLen) {
    gated_delta_rule_prefill_chunked(q, k, v, qkv_stride, g, beta, state_pool, batch, dims, workspace, workspace_bytes,
                                     out, stream);
  } else {
    gated_delta_rule_prefill_recurrent(q, k, v, qkv_stride, g, beta, state_pool, batch, dims, out, stream);
  }
}

}  // namespace ds::kernels::cuda
