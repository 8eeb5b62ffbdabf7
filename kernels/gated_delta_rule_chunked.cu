// Prefill "v3": the chunked (WY / UT-transform) gated delta rule on BF16 tensor cores (mma.sync
// m16n8k16, fp32 accumulation), chunk 64, dk = dv = 128.
//
// With chunk-local cumulative log decay γ_i, A_ij = β_i e^{γ_i-γ_j} k̂_i·k̂_j (j < i) and
// T = (I + A)⁻¹ (see cpu::gated_delta_rule_prefill_chunked for the derivation):
//   W_k = T diag(β e^γ) K̂,  W_v = T diag(β) V                              (chunk-local)
//   U = W_v − W_k Mᵀ;  O = Q_γ Mᵀ + P U;  M ← e^{γ_L} M + Uᵀ K_d             (sequential in M)
// with Q_γ = diag(e^γ) Q̂, P_ij = e^{γ_i-γ_j} q̂_i·k̂_j (j <= i), K_d = diag(e^{γ_L-γ}) K̂.
//
// Kernel 1 (prepare_chunk_kernel), one block per (chunk, value head), fully parallel: k̂k̂ᵀ and
// q̂k̂ᵀ on tensor cores, T by blocked inversion in fp32 (16×16 diagonal blocks by substitution, the
// rest by block products), W_k = T diag(β e^γ)·K̂ and W_vᵀ = (βV)ᵀTᵀ on tensor cores; W_k, W_vᵀ,
// Q_γ, K_d, P (BF16) and e^{γ_L} go to the workspace. Kernel 2 (scan_chunks_kernel), one block per
// (sequence, value head, 32/64/128 state rows), walks the sequence's chunks in order, its state
// rows in fp32 mma accumulators (BF16 operands, fp32 accumulation, as FLA does), a copy warp
// bringing the next chunks' workspace into shared memory. State rows are independent, so blocks
// need no communication.
// v2 (session 3) did the same algebra in TF32 with an fp32 workspace and W by per-column forward
// substitution: 2.7–3.5× slower than FLA; v3 is faster than FLA at every GPU.md shape
// (docs/performance.md).
//
// Chunks are aligned to each sequence's start. Sequence s's chunks use workspace slots
// first_chunk(s) = cu_seqlens[s] / 64 + s onwards: non-overlapping, at most T/64 + num_seqs in all.
#include <stdexcept>

#include "kernels/attention_mma.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule.h"
#include "kernels/gated_delta_rule_detail.cuh"
#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using gdr::kHeadDim;
using nvbf16 = __nv_bfloat16;

constexpr int kChunk = 64;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 16;  // MMA tile edge
// Shared-memory row strides, padded by 16 bytes so that the rows of a fragment fall into different
// banks (unpadded rows of 64 or 128 BF16 / 32 or 64 floats all start in bank 0).
constexpr int kLdH = kHeadDim + 8;  // BF16 rows of 128
constexpr int kLdC = kChunk + 8;    // BF16 rows of 64
constexpr int kLdF64 = kChunk + 4;  // fp32 rows of 64

// Workspace of one (chunk, head), in BF16 elements; the chunk decay e^{γ_L} is an fp32 at the end.
constexpr int64_t kWkOffset = 0;
constexpr int64_t kWvtOffset = kWkOffset + kChunk * kHeadDim;  // W_vᵀ [dv][token]
constexpr int64_t kQgOffset = kWvtOffset + kChunk * kHeadDim;
constexpr int64_t kKdOffset = kQgOffset + kChunk * kHeadDim;
constexpr int64_t kPOffset = kKdOffset + kChunk * kHeadDim;
constexpr int64_t kDecayOffset = kPOffset + kChunk * kChunk;
constexpr int64_t kChunkElems = kDecayOffset + 16;  // keeps every block 32-byte aligned
static_assert(kChunkElems * 2 % 32 == 0 && kDecayOffset % 2 == 0);

__host__ __device__ inline int64_t first_chunk(const int32_t* cu_seqlens, int64_t s) {
  return cu_seqlens[s] / kChunk + s;
}

int64_t max_chunk_slots(int64_t num_tokens, int64_t num_seqs) { return num_tokens / kChunk + num_seqs; }

// Row of the [n][k] tile a lane points ldmatrix at for the B fragments of n-tiles n0, n0 + 8
// (mma::b_fragment_chunk's layout on padded rows); its column chunk adds ((lane >> 3) & 1). The
// same rows, transposed, give A fragments from a [k][m] tile.
__device__ __forceinline__ int b_row(int lane, int n0) { return n0 + (lane & 7) + ((lane >> 4) << 3); }

// Byte offset of a lane's ldmatrix row for an A fragment (rows m0.., k-chunk 0) of a [m][k] tile of
// row stride ld; k-step kk adds 32·kk bytes.
__device__ __forceinline__ uint32_t a_offset(int lane, int m0, int ld) {
  return uint32_t((m0 + (lane & 15)) * ld + (lane >> 4) * 8) * 2;
}

// The A fragment (16 × 16, k-step kk) of a 16 × (8·N) accumulator held as N n-tiles, in BF16.
template <int N>
__device__ __forceinline__ void a_fragment(uint32_t (&a)[4], const float (&acc)[N][4], int kk) {
  a[0] = mma::pack_bf16x2(acc[2 * kk][0], acc[2 * kk][1]);
  a[1] = mma::pack_bf16x2(acc[2 * kk][2], acc[2 * kk][3]);
  a[2] = mma::pack_bf16x2(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
  a[3] = mma::pack_bf16x2(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

// A 16 × (8·N) accumulator (rows row0 + g, + 8; columns col0 + 8j + c2, + 1) to a row-major tile.
template <int N, typename T>
__device__ __forceinline__ void store_accumulator(T* dst, int64_t ld, const float (&acc)[N][4], int row0, int col0) {
  const int lane = threadIdx.x % 32, g = lane / 4, c2 = 2 * (lane % 4);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    T* lo = dst + (row0 + g) * ld + col0 + 8 * j + c2;
    T* hi = lo + 8 * ld;
    if constexpr (std::is_same_v<T, float>) {
      *reinterpret_cast<float2*>(lo) = float2{acc[j][0], acc[j][1]};
      *reinterpret_cast<float2*>(hi) = float2{acc[j][2], acc[j][3]};
    } else {
      *reinterpret_cast<uint32_t*>(lo) = mma::pack_bf16x2(acc[j][0], acc[j][1]);
      *reinterpret_cast<uint32_t*>(hi) = mma::pack_bf16x2(acc[j][2], acc[j][3]);
    }
  }
}

struct ChunkedParams {
  const nvbf16* q;
  const nvbf16* k;
  const nvbf16* v;
  int64_t qkv_stride;
  const float* g;
  const float* beta;
  float* state_pool;
  GdnVarlenBatch batch;
  int64_t num_v_heads;
  int64_t ratio;
  nvbf16* workspace;
  nvbf16* out;
};

// Shared memory of kernel 1 (two blocks per SM).
struct PrepareSmem {
  nvbf16 qn[kChunk * kLdH];              // q̂ (scaled by dk^-0.5); later T diag(β e^γ) in BF16 (row stride kLdC)
  nvbf16 kn[kChunk * kLdH];              // k̂
  nvbf16 bv[kChunk * kLdH];              // β v
  float kk[kChunk * kLdF64];             // k̂ k̂ᵀ, then A, then T in BF16 (row stride kLdC)
  float tt[kChunk * kLdF64];             // q̂ k̂ᵀ, then T (fp32)
  float inv_scratch[3 * kTile * kTile];  // the inversion's block products
  float gamma[kChunk];
  float beta[kChunk];
  float k_scale[kChunk];  // β e^γ
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

// g and β of two rows of the chunk per lane (rows >= L zero), loaded by one warp.
struct GateRows {
  float g0, g1, b0, b1;
};
__device__ __forceinline__ GateRows load_gates(const ChunkedParams& p, int64_t t0, int L, int64_t h) {
  const int r = 2 * (threadIdx.x % 32);
  const float* g = p.g + (t0 + r) * p.num_v_heads + h;
  const float* b = p.beta + (t0 + r) * p.num_v_heads + h;
  return {r < L ? g[0] : 0.f, r + 1 < L ? g[p.num_v_heads] : 0.f, r < L ? b[0] : 0.f,
          r + 1 < L ? b[p.num_v_heads] : 0.f};
}

// γ (inclusive cumulative sum of g over the chunk, by a shuffle scan), β and β e^γ to shared memory.
__device__ __forceinline__ void store_gates(const GateRows& in, float* gamma, float* beta, float* k_scale) {
  const int lane = threadIdx.x % 32, r = 2 * lane;
  float sum = in.g0 + in.g1;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const float prev = __shfl_up_sync(0xffffffffu, sum, off);
    if (lane >= off) sum += prev;
  }
  gamma[r] = sum - in.g1;
  gamma[r + 1] = sum;
  beta[r] = in.b0;
  beta[r + 1] = in.b1;
  k_scale[r] = in.b0 * __expf(sum - in.g1);
  k_scale[r + 1] = in.b1 * __expf(sum);
}

// T = (I + A)⁻¹ for A strictly lower triangular (64×64, fp32, row stride kLdF64) into t, lower
// block triangle only. Diagonal 16×16 blocks by forward substitution (one column per thread), then
// T_ij = −T_ii Σ_{j<=k<i} A_ik T_kj over block diagonals d = i − j = 1, 2, 3. x: 768 floats.
__device__ __forceinline__ void invert_unit_lower(const float* a, float* t, float* x) {
  constexpr int kB = kTile;
  if (threadIdx.x < kChunk) {
    const int o = (threadIdx.x / kB) * kB, j = threadIdx.x % kB;
    float col[kB];
#pragma unroll
    for (int r = 0; r < kB; ++r) {
      float acc = r == j ? 1.f : 0.f;
#pragma unroll
      for (int m = 0; m < r; ++m) acc -= a[(o + r) * kLdF64 + o + m] * col[m];
      col[r] = r < j ? 0.f : acc;
    }
#pragma unroll
    for (int r = 0; r < kB; ++r) t[(o + r) * kLdF64 + o + j] = col[r];
  }
  __syncthreads();
#pragma unroll
  for (int d = 1; d < kChunk / kB; ++d) {
    // One thread per 4 columns of a row of each block (i = j + d, j): at most 192 threads.
    const int blocks = kChunk / kB - d;
    const int e = threadIdx.x, j = e / (kB * 4), i = j + d, r = (e / 4) % kB, c = (e % 4) * 4;
    static_assert(3 * kB * 4 <= kThreads, "one pass per block diagonal");
    if (e < blocks * kB * 4) {  // X_ij = Σ_k A_ik T_kj
      float4 acc{0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int mm = 0; mm < d * kB; ++mm) {
        const int m = j * kB + mm;
        const float am = a[(i * kB + r) * kLdF64 + m];
        const float4 tm = *reinterpret_cast<const float4*>(t + m * kLdF64 + j * kB + c);
        acc.x += am * tm.x, acc.y += am * tm.y, acc.z += am * tm.z, acc.w += am * tm.w;
      }
      *reinterpret_cast<float4*>(x + (j * kB + r) * kB + c) = acc;
    }
    __syncthreads();
    if (e < blocks * kB * 4) {  // T_ij = −T_ii X_ij
      float4 acc{0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int m = 0; m < kB; ++m) {
        const float tm = t[(i * kB + r) * kLdF64 + i * kB + m];
        const float4 xm = *reinterpret_cast<const float4*>(x + (j * kB + m) * kB + c);
        acc.x += tm * xm.x, acc.y += tm * xm.y, acc.z += tm * xm.z, acc.w += tm * xm.w;
      }
      *reinterpret_cast<float4*>(t + (i * kB + r) * kLdF64 + j * kB + c) = float4{-acc.x, -acc.y, -acc.z, -acc.w};
    }
    __syncthreads();
  }
}

// grid (max chunk slots, Hv).
__global__ void __launch_bounds__(kThreads, 2) prepare_chunk_kernel(ChunkedParams p) {
  extern __shared__ __align__(128) float4 smem_raw[];
  PrepareSmem& sm = *reinterpret_cast<PrepareSmem*>(smem_raw);
  const int64_t c = blockIdx.x, h = blockIdx.y;
  // Where the chunk lies; a single sequence (cu_seqlens = {0, T}) needs no dependent loads first.
  int64_t t0 = c * kChunk, seq_end = p.batch.num_tokens;
  if (p.batch.num_seqs > 1) {
    const int64_t s = sequence_of_chunk(p.batch, c);
    t0 = p.batch.cu_seqlens[s] + (c - first_chunk(p.batch.cu_seqlens, s)) * kChunk;
    seq_end = p.batch.cu_seqlens[s + 1];
  }
  if (t0 >= seq_end) return;  // an unused slot
  const int L = int(seq_end - t0 < kChunk ? seq_end - t0 : kChunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kh = h / p.ratio;
  nvbf16* ws = p.workspace + (c * p.num_v_heads + h) * kChunkElems;

  // 1. Gates (warp 0, first: the others wait for them), then raw q, k, v rows (zeros past the
  //    chunk's end): each warp owns rows warp, warp + 8, ..., all loads issued before any is used.
  GateRows gates{};
  if (warp == 0) gates = load_gates(p, t0, L, h);
  constexpr int kRowsPerWarp = kChunk / kWarps;
  gdr::Lane4 kraw[kRowsPerWarp], qraw[kRowsPerWarp];
  uint2 vraw[kRowsPerWarp];  // 4 BF16 values, converted when used
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + i * kWarps;
    kraw[i] = qraw[i] = gdr::Lane4{};
    vraw[i] = uint2{0u, 0u};
    if (r < L) {
      const int64_t row = (t0 + r) * p.qkv_stride + kh * kHeadDim;
      kraw[i] = gdr::load_lane4(p.k + row);
      qraw[i] = gdr::load_lane4(p.q + row);
      vraw[i] = *reinterpret_cast<const uint2*>(p.v + (t0 + r) * p.qkv_stride + h * kHeadDim + lane * gdr::kPerLane);
    }
  }
  if (warp == 0) store_gates(gates, sm.gamma, sm.beta, sm.k_scale);
  __syncthreads();
  // 2. q̂, k̂, β v to shared memory; Q_γ and K_d straight to the workspace.
  const float gamma_last = sm.gamma[L - 1];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + i * kWarps;
    const gdr::Lane4 kr = gdr::l2_normalized(kraw[i], 1.f);
    const gdr::Lane4 qr = gdr::l2_normalized(qraw[i], rsqrtf(float(kHeadDim)));
    const float2 v01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&vraw[i].x));
    const float2 v23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&vraw[i].y));
    const float vr[gdr::kPerLane] = {v01.x, v01.y, v23.x, v23.y};
    const float q_scale = __expf(sm.gamma[r]), k_scale = r < L ? __expf(gamma_last - sm.gamma[r]) : 0.f;
    float qg[gdr::kPerLane], kd[gdr::kPerLane], bv[gdr::kPerLane];
#pragma unroll
    for (int j = 0; j < gdr::kPerLane; ++j) {
      qg[j] = q_scale * qr.v[j];
      kd[j] = k_scale * kr.v[j];
      bv[j] = sm.beta[r] * vr[j];
    }
    const int col = lane * gdr::kPerLane;
    cuda_utils::store_vec<gdr::kPerLane>(sm.qn + r * kLdH + col, qr.v);
    cuda_utils::store_vec<gdr::kPerLane>(sm.kn + r * kLdH + col, kr.v);
    cuda_utils::store_vec<gdr::kPerLane>(sm.bv + r * kLdH + col, bv);
    cuda_utils::store_vec<gdr::kPerLane>(ws + kQgOffset + r * kHeadDim + col, qg);
    cuda_utils::store_vec<gdr::kPerLane>(ws + kKdOffset + r * kHeadDim + col, kd);
  }
  __syncthreads();
  // 3. k̂ k̂ᵀ and q̂ k̂ᵀ (fp32): warp w computes rows 16(w/2).. and columns 32(w%2).. of both.
  {
    const int m0 = (warp / 2) * 16, n0 = (warp % 2) * 32;
    const uint32_t kn = mma::smem_address(sm.kn), qn = mma::smem_address(sm.qn);
    const uint32_t a_off = a_offset(lane, m0, kLdH);
    const uint32_t b_off = uint32_t(b_row(lane, n0) * kLdH + ((lane >> 3) & 1) * 8) * 2;
    float kk_acc[4][4] = {}, qk_acc[4][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t ak[4], aq[4], b[2][4];
      mma::ldmatrix_x4(ak, kn + a_off + 32 * kk);
      mma::ldmatrix_x4(aq, qn + a_off + 32 * kk);
#pragma unroll
      for (int np = 0; np < 2; ++np) mma::ldmatrix_x4(b[np], kn + b_off + (16 * np * kLdH + 16 * kk) * 2);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        mma::mma_bf16(kk_acc[j], ak, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
        mma::mma_bf16(qk_acc[j], aq, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
      }
    }
    store_accumulator(sm.kk, kLdF64, kk_acc, m0, n0);
    store_accumulator(sm.tt, kLdF64, qk_acc, m0, n0);
  }
  __syncthreads();
  // 4. One pass, a warp per row, two columns per thread: A_ij = β_i e^{γ_i-γ_j} k̂_i·k̂_j
  //    (j < i, else 0) in place of k̂k̂ᵀ, and P (BF16) to the workspace.
  for (int i = 2 * threadIdx.x; i < kChunk * kChunk; i += 2 * kThreads) {
    const int r = i / kChunk, col = i % kChunk;
    const float2 gc = *reinterpret_cast<const float2*>(sm.gamma + col);
    const float d0 = col <= r ? __expf(sm.gamma[r] - gc.x) : 0.f;
    const float d1 = col + 1 <= r ? __expf(sm.gamma[r] - gc.y) : 0.f;
    float2& a = *reinterpret_cast<float2*>(sm.kk + r * kLdF64 + col);
    a = float2{col < r ? sm.beta[r] * d0 * a.x : 0.f, col + 1 < r ? sm.beta[r] * d1 * a.y : 0.f};
    const float2 qk = *reinterpret_cast<const float2*>(sm.tt + r * kLdF64 + col);
    *reinterpret_cast<uint32_t*>(ws + kPOffset + i) = mma::pack_bf16x2(d0 * qk.x, d1 * qk.y);
  }
  if (threadIdx.x == 0) *reinterpret_cast<float*>(ws + kDecayOffset) = __expf(gamma_last);
  __syncthreads();
  // 5. T = (I + A)⁻¹ in place of q̂k̂ᵀ, then in BF16 (zero above the block diagonal) as T for W_v (in
  //    place of A) and as T diag(β e^γ) for W_k (in place of q̂).
  invert_unit_lower(sm.kk, sm.tt, sm.inv_scratch);
  nvbf16* tv = reinterpret_cast<nvbf16*>(sm.kk);
  nvbf16* tk = sm.qn;
  for (int i = threadIdx.x; i < kChunk * kChunk; i += kThreads) {
    const int r = i / kChunk, col = i % kChunk;
    const float t = col / kTile <= r / kTile ? sm.tt[r * kLdF64 + col] : 0.f;
    tv[r * kLdC + col] = __float2bfloat16(t);
    tk[r * kLdC + col] = __float2bfloat16(t * sm.k_scale[col]);
  }
  __syncthreads();
  // 6. W_k = T diag(β e^γ)·K̂: warp w computes tokens 16(w/2).. (T's row block i needs k-steps
  //    <= i) and dk columns 64(w%2)..; K̂ is [k][n]: transposed ldmatrix.
  {
    const int m0 = (warp / 2) * 16, n0 = (warp % 2) * 64;
    const uint32_t a = mma::smem_address(tk) + a_offset(lane, m0, kLdC);
    const uint32_t b = mma::smem_address(sm.kn) + uint32_t((lane & 15) * kLdH + n0 + (lane >> 4) * 8) * 2;
    float acc[8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      if (16 * kk > m0) break;
      uint32_t af[4];
      mma::ldmatrix_x4(af, a + 32 * kk);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t bf[4];
        mma::ldmatrix_x4_trans(bf, b + (16 * kk * kLdH + 16 * np) * 2);
        mma::mma_bf16(acc[2 * np], af, bf[0], bf[1]);
        mma::mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    store_accumulator(ws + kWkOffset, kHeadDim, acc, m0, n0);
  }
  // 7. W_vᵀ = (β V)ᵀ Tᵀ: warp w computes dv rows 16w.. for all tokens; (β V)ᵀ comes from [token][dv]
  //    by transposed ldmatrix, Tᵀ from T's rows; token block np needs k-steps <= np.
  {
    const int m0 = warp * 16;
    const uint32_t a = mma::smem_address(sm.bv) + uint32_t(b_row(lane, 0) * kLdH + m0 + ((lane >> 3) & 1) * 8) * 2;
    const uint32_t b = mma::smem_address(tv) + uint32_t(b_row(lane, 0) * kLdC + ((lane >> 3) & 1) * 8) * 2;
    float acc[8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      uint32_t af[4];
      mma::ldmatrix_x4_trans(af, a + 16 * kk * kLdH * 2);
#pragma unroll
      for (int np = kk; np < kChunk / 16; ++np) {
        uint32_t bf[4];
        mma::ldmatrix_x4(bf, b + (16 * np * kLdC + 16 * kk) * 2);
        mma::mma_bf16(acc[2 * np], af, bf[0], bf[1]);
        mma::mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    store_accumulator(ws + kWvtOffset, kChunk, acc, m0, 0);
  }
}

// A [kRowsN][kCols] block of global BF16 rows (stride kLdSrc) into shared rows of stride kLdDst,
// 16 bytes per cp.async, issued by the 32 lanes of one warp; every offset is a per-lane base plus a
// compile-time step.
template <int kRowsN, int kCols, int kLdDst, int kLdSrc>
__device__ __forceinline__ void copy_rows_async(nvbf16* dst, const nvbf16* src, int lane) {
  constexpr int kPerLane = kRowsN * kCols / (8 * 32);
  static_assert(kPerLane * 8 * 32 == kRowsN * kCols && (8 * 32) % kCols == 0);
  constexpr int kRowStep = 8 * 32 / kCols;
  const int row = lane * 8 / kCols, col = lane * 8 % kCols;
  dst += row * kLdDst + col;
  src += row * kLdSrc + col;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) mma::cp_async_16(dst + k * kRowStep * kLdDst, src + k * kRowStep * kLdSrc, true);
}

// Kernel 2 with kScanWarps warps per block, each owning 16 rows (dv) of the state and all 128
// columns (dk) as mma.m16n8k16 accumulator fragments. Every product of the scan then takes its A
// operand from registers (the state, or U computed as Uᵀ so that its accumulators are A
// fragments, as flash attention does with P) and its B operand from the chunk's workspace in
// shared memory; warps share nothing but that read-only data, so a chunk needs one barrier. One
// more warp issues the chunks' copies: the LSU queue stalls whichever warp issues them.
template <int kScanWarps>
struct ScanLayout {
  static constexpr int kThreads = 32 * (kScanWarps + 1);  // the last warp copies the chunks in
  static constexpr int kRows = 16 * kScanWarps;           // state rows per block
  static constexpr int kLdO = kRows + 8;
  // One chunk's workspace as the scan reads it (B operands, [n][k] or, for K_d, [k][n]).
  struct ChunkBuffers {
    nvbf16 wk[kChunk * kLdH];  // W_k [token][dk]
    nvbf16 qg[kChunk * kLdH];  // Q_γ [token][dk]
    nvbf16 kd[kChunk * kLdH];  // K_d [token][dk]
    nvbf16 pm[kChunk * kLdC];  // P [token i][token j]
    nvbf16 wvt[kRows * kLdC];  // W_vᵀ [dv][token], this block's rows
  };
  // Chunks n+1 .. n+kStages-1 land while chunk n is computed (as many as fit in shared memory).
  static constexpr int kStages = kScanWarps <= 4 ? 3 : 2;
  struct Smem {
    ChunkBuffers buf[kStages];
    nvbf16 o[kChunk * kLdO];  // output staging [token][dv of this block]
  };

  // Issues chunk n's copies (if it exists) as one cp.async group: every call commits a group, so
  // that waiting for "all but the kStages - 2 newest" always means chunk n - kStages + 2 is in.
  static __device__ void load_chunk_async(ChunkBuffers& b, const nvbf16* ws, int row0, bool exists, int lane) {
    if (!exists) {
      mma::cp_async_commit();
      return;
    }
    copy_rows_async<kChunk, kHeadDim, kLdH, kHeadDim>(b.wk, ws + kWkOffset, lane);
    copy_rows_async<kChunk, kHeadDim, kLdH, kHeadDim>(b.qg, ws + kQgOffset, lane);
    copy_rows_async<kChunk, kHeadDim, kLdH, kHeadDim>(b.kd, ws + kKdOffset, lane);
    copy_rows_async<kChunk, kChunk, kLdC, kChunk>(b.pm, ws + kPOffset, lane);
    copy_rows_async<kRows, kChunk, kLdC, kChunk>(b.wvt, ws + kWvtOffset + int64_t(row0) * kChunk, lane);
    mma::cp_async_commit();
  }
};

// grid (num_seqs, Hv, 8 / kScanWarps). Per chunk, per warp (16 state rows M_w):
//   Uᵀ = W_vᵀ − M_w W_kᵀ and Oᵀ = M_w Q_γᵀ      (k = dk, A = M_w)
//   Oᵀ += Uᵀ Pᵀ                                  (k = tokens, A = Uᵀ; P is lower triangular)
//   M_w ← e^{γ_L} M_w + Uᵀ K_d                   (k = tokens, A = Uᵀ)
template <int kScanWarps>
__global__ void __launch_bounds__(32 * (kScanWarps + 1), 1) scan_chunks_kernel(ChunkedParams p) {
  using S = ScanLayout<kScanWarps>;
  extern __shared__ __align__(128) float4 smem_raw[];
  auto& sm = *reinterpret_cast<typename S::Smem*>(smem_raw);
  const int64_t s = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c2 = 2 * (lane % 4);
  const int row0 = blockIdx.z * S::kRows, wrow = warp * 16;  // block's and warp's first state row
  const int64_t start = p.batch.cu_seqlens[s], end = p.batch.cu_seqlens[s + 1];
  const bool from_state = p.batch.has_initial_state == nullptr || p.batch.has_initial_state[s] != 0;
  const int64_t chunk0 = first_chunk(p.batch.cu_seqlens, s);
  const int64_t num_chunks = (end - start + kChunk - 1) / kChunk;
  auto chunk_ws = [&](int64_t n) { return p.workspace + ((chunk0 + n) * p.num_v_heads + h) * kChunkElems; };
  if (warp == kScanWarps) {  // the copy warp: chunk n + kStages - 1 goes in while chunk n is computed
    for (int i = 0; i + 1 < S::kStages; ++i) S::load_chunk_async(sm.buf[i], chunk_ws(i), row0, i < num_chunks, lane);
    for (int64_t n = 0; n < num_chunks; ++n) {
      mma::cp_async_wait<S::kStages - 2>();  // chunk n
      __syncthreads();                       // ... visible to all, and every warp is done with chunk n-1's buffer
      const int64_t ahead = n + S::kStages - 1;
      S::load_chunk_async(sm.buf[ahead % S::kStages], chunk_ws(ahead), row0, ahead < num_chunks, lane);
    }
    return;
  }

  // This lane's state elements: rows (g, g + 8) of the warp, columns 8j + c2 + {0, 1}.
  float* state = p.state_pool + (int64_t(p.batch.slots[s]) * p.num_v_heads + h) * kHeadDim * kHeadDim +
                 int64_t(row0 + wrow + g) * kHeadDim + c2;
  float m[kHeadDim / 8][4];
#pragma unroll
  for (int j = 0; j < kHeadDim / 8; ++j) {
    const float2 lo = from_state ? *reinterpret_cast<const float2*>(state + 8 * j) : float2{0.f, 0.f};
    const float2 hi = from_state ? *reinterpret_cast<const float2*>(state + 8 * kHeadDim + 8 * j) : float2{0.f, 0.f};
    m[j][0] = lo.x, m[j][1] = lo.y, m[j][2] = hi.x, m[j][3] = hi.y;
  }
  constexpr int kTokTiles = kChunk / 8;
  // Per-lane byte offsets of the ldmatrix rows (b_row for [n][k] tiles; 16 k-rows for K_d).
  const uint32_t lane_h = uint32_t(b_row(lane, 0) * kLdH + ((lane >> 3) & 1) * 8) * 2;
  const uint32_t lane_c = uint32_t(b_row(lane, 0) * kLdC + ((lane >> 3) & 1) * 8) * 2;
  const uint32_t lane_kd = uint32_t((lane & 15) * kLdH + (lane >> 4) * 8) * 2;
  for (int64_t n = 0; n < num_chunks; ++n) {
    const int64_t t0 = start + n * kChunk;
    const int L = int(end - t0 < kChunk ? end - t0 : kChunk);
    const float decay = *reinterpret_cast<const float*>(chunk_ws(n) + kDecayOffset);
    const typename S::ChunkBuffers& b = sm.buf[n % S::kStages];
    __syncthreads();  // chunk n is in (the copy warp waited for it)
    const uint32_t wk = mma::smem_address(b.wk) + lane_h, qg = mma::smem_address(b.qg) + lane_h;
    const uint32_t pm = mma::smem_address(b.pm) + lane_c, kd = mma::smem_address(b.kd) + lane_kd;

    float u[kTokTiles][4] = {}, o[kTokTiles][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a[4];
      a_fragment(a, m, kk);
#pragma unroll
      for (int np = 0; np < kChunk / 16; ++np) {
        const uint32_t off = (16 * np * kLdH + 16 * kk) * 2;
        uint32_t bw[4], bq[4];
        mma::ldmatrix_x4(bw, wk + off);
        mma::ldmatrix_x4(bq, qg + off);
        mma::mma_bf16(u[2 * np], a, bw[0], bw[1]);
        mma::mma_bf16(u[2 * np + 1], a, bw[2], bw[3]);
        mma::mma_bf16(o[2 * np], a, bq[0], bq[1]);
        mma::mma_bf16(o[2 * np + 1], a, bq[2], bq[3]);
      }
    }
    // U = W_vᵀ − M_w W_kᵀ; tokens past the chunk's end have zero W_v and W_k rows, so zero U.
#pragma unroll
    for (int j = 0; j < kTokTiles; ++j) {
      const nvbf16* w = b.wvt + (wrow + g) * kLdC + 8 * j + c2;
      const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(w));
      const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(w + 8 * kLdC));
      u[j][0] = lo.x - u[j][0], u[j][1] = lo.y - u[j][1], u[j][2] = hi.x - u[j][2], u[j][3] = hi.y - u[j][3];
    }
    uint32_t ua[kChunk / 16][4];
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) a_fragment(ua[kk], u, kk);
      // Oᵀ += Uᵀ Pᵀ: token block kk of U meets output tokens np only where P is non-zero (np >= kk).
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
#pragma unroll
      for (int np = kk; np < kChunk / 16; ++np) {
        uint32_t bp[4];
        mma::ldmatrix_x4(bp, pm + (16 * np * kLdC + 16 * kk) * 2);
        mma::mma_bf16(o[2 * np], ua[kk], bp[0], bp[1]);
        mma::mma_bf16(o[2 * np + 1], ua[kk], bp[2], bp[3]);
      }
    }
    // M_w ← e^{γ_L} M_w + Uᵀ K_d (K_d is [k][n]: transposed ldmatrix).
#pragma unroll
    for (int j = 0; j < kHeadDim / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) m[j][e] *= decay;
    }
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kHeadDim / 16; ++np) {
        uint32_t bk[4];
        mma::ldmatrix_x4_trans(bk, kd + (16 * kk * kLdH + 16 * np) * 2);
        mma::mma_bf16(m[2 * np], ua[kk], bk[0], bk[1]);
        mma::mma_bf16(m[2 * np + 1], ua[kk], bk[2], bk[3]);
      }
    }
    // Oᵀ (16 dv × 64 tokens) through this warp's columns of the staging tile to the output rows.
    nvbf16* os = sm.o + wrow + g;
#pragma unroll
    for (int j = 0; j < kTokTiles; ++j) {
      const int t = 8 * j + c2;
      os[t * S::kLdO] = __float2bfloat16(o[j][0]);
      os[(t + 1) * S::kLdO] = __float2bfloat16(o[j][1]);
      os[t * S::kLdO + 8] = __float2bfloat16(o[j][2]);
      os[(t + 1) * S::kLdO + 8] = __float2bfloat16(o[j][3]);
    }
    __syncwarp();
    for (int i = lane; i < 2 * kChunk; i += 32) {
      const int t = i / 2, col = wrow + (i % 2) * 8;
      if (t < L) {
        *reinterpret_cast<uint4*>(p.out + ((t0 + t) * p.num_v_heads + h) * kHeadDim + row0 + col) =
            *reinterpret_cast<const uint4*>(sm.o + t * S::kLdO + col);
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int j = 0; j < kHeadDim / 8; ++j) {
    *reinterpret_cast<float2*>(state + 8 * j) = float2{m[j][0], m[j][1]};
    *reinterpret_cast<float2*>(state + 8 * kHeadDim + 8 * j) = float2{m[j][2], m[j][3]};
  }
}

template <int kScanWarps>
void launch_scan_warps(const ChunkedParams& p, cudaStream_t stream) {
  using S = ScanLayout<kScanWarps>;
  cuda_utils::allow_shared_memory<scan_chunks_kernel<kScanWarps>>(sizeof(typename S::Smem),
                                                                  "gated_delta_rule_prefill_chunked");
  const dim3 grid(unsigned(p.batch.num_seqs), unsigned(p.num_v_heads), 8 / kScanWarps);
  scan_chunks_kernel<kScanWarps><<<grid, S::kThreads, sizeof(typename S::Smem), stream>>>(p);
  cuda_utils::check_launch("gated_delta_rule_prefill_chunked (scan)");
}

// The scan runs one block per SM (its chunk buffers fill shared memory). Every compute warp reads
// the whole chunk from shared memory, and every block reads it from L2: 2 compute warps per block
// while the blocks fill at most half the SMs, else 4 while they fit, else 8 (one block per head).
// gdn_prefill_bench, 1x H100, 64k tokens: Hk8 Hv16 2.93 ms with 2 (3.26 with 4); Hk16 Hv32 4.47
// with 4 (4.84 with 2); 64 sequences of 1k Hv32 4.01 with 8 (4.46 with 4).
void launch_scan(const ChunkedParams& p, cudaStream_t stream) {
  const int64_t sms = cuda_utils::current_device_sm_count("gated_delta_rule_prefill_chunked");
  const int64_t heads = p.batch.num_seqs * p.num_v_heads;
  if (heads * 4 <= sms / 2)
    launch_scan_warps<2>(p, stream);
  else if (heads * 2 <= sms)
    launch_scan_warps<4>(p, stream);
  else
    launch_scan_warps<8>(p, stream);
}

}  // namespace

size_t gated_delta_rule_prefill_workspace_bytes(int64_t num_tokens, int64_t num_seqs, const GdnDims& dims) {
  return size_t(max_chunk_slots(num_tokens, num_seqs)) * size_t(dims.num_v_heads) * kChunkElems * sizeof(nvbf16);
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
                        static_cast<nvbf16*>(workspace),
                        as_nv(out)};
  if (batch.num_tokens > 0) {
    cuda_utils::allow_shared_memory<prepare_chunk_kernel>(sizeof(PrepareSmem), "gated_delta_rule_prefill_chunked");
    const dim3 grid(unsigned(max_chunk_slots(batch.num_tokens, batch.num_seqs)), unsigned(dims.num_v_heads));
    prepare_chunk_kernel<<<grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
    cuda_utils::check_launch("gated_delta_rule_prefill_chunked (prepare)");
  }
  launch_scan(p, stream);
}

void gated_delta_rule_prefill(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                              const float* beta, float* state_pool, const GdnVarlenBatch& batch, const GdnDims& dims,
                              void* workspace, size_t workspace_bytes, bf16* out, cudaStream_t stream) {
  // On short prompts the per-token recurrence beats the chunked form's fixed cost (two launches and
  // a whole 64-token chunk's preparation). gdn_prefill_bench, H100, Hk 16 Hv 32, one sequence:
  // recurrent / chunked = 21 / 23 µs at T = 16, 35 / 22 at 32, 63 / 23 at 64. Up to 32 tokens stay on
  // the recurrence all the same: with prompts of 17-32 tokens on the chunked form, model_fp8_test's
  // 24-token MoE prompt hit a routing near-tie (FP8 vs its BF16 twin 9.4e-2 on 1 of 24 rows).
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
