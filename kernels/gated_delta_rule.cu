#include <stdexcept>

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule.h"
#include "kernels/gated_delta_rule_decode.cuh"
#include "kernels/gated_delta_rule_detail.cuh"
#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using gdr::kHeadDim;
using gdr::kPerLane;
using gdr::Lane4;

void check_rule_args(int64_t qkv_stride, const GdnDims& dims, const char* op) {
  check_cuda_head_dims(dims, op);
  check_row_stride(qkv_stride, dims.conv_dim(), op, "q/k/v");
  if (qkv_stride % 8 != 0) throw std::invalid_argument(std::string(op) + ": qkv_stride must be a multiple of 8");
}

// ---- prefill v1: per-token recurrence, state rows in registers ----

constexpr int kPrefillWarps = 4;
constexpr int kPrefillRowsPerWarp = 8;
constexpr int kPrefillRowsPerBlock = kPrefillWarps * kPrefillRowsPerWarp;  // 32: 4 blocks per head

struct PrefillParams {
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
  __nv_bfloat16* out;
};

// One token's inputs as a warp of the block (sequence, head h, rows row0..) needs them.
struct TokenInputs {
  Lane4 q, k;
  float v[kPrefillRowsPerWarp];
  float g, beta;
};

__device__ __forceinline__ TokenInputs load_token(const PrefillParams& p, int64_t t, int64_t h, int row0) {
  TokenInputs in;
  const int64_t kh = h / p.ratio;
  in.q = gdr::load_lane4(p.q + t * p.qkv_stride + kh * kHeadDim);
  in.k = gdr::load_lane4(p.k + t * p.qkv_stride + kh * kHeadDim);
  cuda_utils::load_vec<kPrefillRowsPerWarp>(p.v + t * p.qkv_stride + h * kHeadDim + row0, in.v);
  in.g = p.g[t * p.num_v_heads + h];
  in.beta = p.beta[t * p.num_v_heads + h];
  return in;
}

// grid (num_seqs, Hv, 128 / kPrefillRowsPerBlock). Tokens of the sequence run in order; the next
// token's inputs load while the current one computes.
__global__ void __launch_bounds__(kPrefillWarps * 32) prefill_recurrent_kernel(PrefillParams p) {
  const int64_t s = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blockIdx.z * kPrefillRowsPerBlock + warp * kPrefillRowsPerWarp;
  const int64_t start = p.batch.cu_seqlens[s], end = p.batch.cu_seqlens[s + 1];
  const bool from_state = p.batch.has_initial_state == nullptr || p.batch.has_initial_state[s] != 0;
  float* state = p.state_pool + (int64_t(p.batch.slots[s]) * p.num_v_heads + h) * kHeadDim * kHeadDim;

  Lane4 rows[kPrefillRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kPrefillRowsPerWarp; ++r) {
    rows[r] = from_state ? gdr::load_lane4(state + (row0 + r) * kHeadDim) : Lane4{};
  }
  TokenInputs cur;
  if (start < end) cur = load_token(p, start, h, row0);
  for (int64_t t = start; t < end; ++t) {
    TokenInputs next;
    if (t + 1 < end) next = load_token(p, t + 1, h, row0);
    const Lane4 k = gdr::l2_normalized(cur.k, 1.f);
    const Lane4 q = gdr::l2_normalized(cur.q, rsqrtf(float(kHeadDim)));
    float o[kPrefillRowsPerWarp];
    gdr::update_rows(rows, cur.v, k, q, expf(cur.g), cur.beta, o);
    if (lane == 0) cuda_utils::store_vec<kPrefillRowsPerWarp>(p.out + (t * p.num_v_heads + h) * kHeadDim + row0, o);
    cur = next;
  }
#pragma unroll
  for (int r = 0; r < kPrefillRowsPerWarp; ++r) {
    *reinterpret_cast<float4*>(state + (row0 + r) * kHeadDim + lane * kPerLane) =
        make_float4(rows[r].v[0], rows[r].v[1], rows[r].v[2], rows[r].v[3]);
  }
}

}  // namespace

void gated_delta_rule_decode(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                             const float* beta, float* state_pool, const int32_t* slots, int64_t batch_size,
                             const GdnDims& dims, bf16* out, cudaStream_t stream) {
  check_rule_args(qkv_stride, dims, "gated_delta_rule_decode");
  if (batch_size <= 0) return;
  gdr::DecodeParams p{};
  p.q = as_nv(q);
  p.k = as_nv(k);
  p.v = as_nv(v);
  p.qkv_stride = qkv_stride;
  p.g = g;
  p.beta = beta;
  p.state_pool = state_pool;
  p.slots = slots;
  p.num_v_heads = dims.num_v_heads;
  p.ratio = dims.ratio();
  p.out = as_nv(out);
  gdr::decode_kernel<false><<<unsigned(batch_size * dims.num_v_heads), gdr::kDecodeWarps * 32, 0, stream>>>(p);
  cuda_utils::check_launch("gated_delta_rule_decode");
}

void gated_delta_rule_prefill_recurrent(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                                        const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                        const GdnDims& dims, bf16* out, cudaStream_t stream) {
  check_rule_args(qkv_stride, dims, "gated_delta_rule_prefill_recurrent");
  check_varlen_batch_shape(batch, "gated_delta_rule_prefill_recurrent");
  if (batch.num_seqs == 0) return;
  const PrefillParams p{as_nv(q),   as_nv(k), as_nv(v),         qkv_stride,   g,         beta,
                        state_pool, batch,    dims.num_v_heads, dims.ratio(), as_nv(out)};
  const dim3 grid(unsigned(batch.num_seqs), unsigned(dims.num_v_heads), kHeadDim / kPrefillRowsPerBlock);
  prefill_recurrent_kernel<<<grid, kPrefillWarps * 32, 0, stream>>>(p);
  cuda_utils::check_launch("gated_delta_rule_prefill_recurrent");
}

}  // namespace ds::kernels::cuda
