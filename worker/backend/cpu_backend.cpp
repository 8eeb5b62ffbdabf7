#include "worker/backend/cpu_backend.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/activation.h"
#include "kernels/gated_delta_rule.h"
#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_gating.h"
#include "kernels/gemm.h"
#include "kernels/norm.h"

namespace ds::worker {

namespace kc = ds::kernels::cpu;

namespace {
void refuse_fp8_rows(const kernels::Fp8Rows* rows, const char* op) {
  if (rows != nullptr) {
    throw std::logic_error(std::string("CpuBackend::") + op + ": FP8 activation rows on the fp32 reference backend");
  }
}
}  // namespace

CpuBackend::CpuBackend(const BackendLimits& limits) : limits_(limits) {}

void CpuBackend::linear(const T* x, int64_t ldx, const LinearWeight<T>& w, T* y, int64_t ldy, int64_t rows, int64_t n,
                        int64_t k, const kernels::Fp8Rows* x_fp8) {
  refuse_fp8_rows(x_fp8, "linear");
  if (rows == 0) return;
  if (w.fp8 != nullptr) {
    kc::gemm_fp8(x, ldx, w.fp8, w.scale_inv, y, ldy, rows, n, k);
  } else {
    kc::gemm(x, ldx, w.w, y, ldy, rows, n, k);
  }
}

void CpuBackend::gemm_f32(const T* x, int64_t ldx, const T* w, float* y, int64_t ldy, int64_t rows, int64_t n,
                          int64_t k) {
  if (rows > 0) kc::gemm(x, ldx, w, y, ldy, rows, n, k);
}

void CpuBackend::embedding(const int32_t* ids, int64_t rows, const T* table, int64_t vocab_start,
                           int64_t table_rows, int64_t hidden, T* out) {
  kc::embedding_lookup(ids, rows, table, vocab_start, table_rows, hidden, out);
}

void CpuBackend::gather_rows(const T* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width, T* out) {
  for (int64_t i = 0; i < rows; ++i) std::copy_n(x + row_ids[i] * ldx, width, out + i * width);
}

void CpuBackend::rms_norm(const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                          const kernels::Fp8Rows* fp8_out) {
  refuse_fp8_rows(fp8_out, "rms_norm");
  kc::rms_norm(x, hidden, w, y, hidden, rows, hidden, eps);
}

void CpuBackend::add_rms_norm(T* residual, const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                              const kernels::Fp8Rows* fp8_out) {
  refuse_fp8_rows(fp8_out, "add_rms_norm");
  kc::add_rms_norm(residual, x, hidden, w, y, hidden, rows, hidden, eps);
}

void CpuBackend::silu_and_mul(const T* x, T* y, int64_t rows, int64_t intermediate, const kernels::Fp8Rows* fp8_out) {
  refuse_fp8_rows(fp8_out, "silu_and_mul");
  kc::silu_and_mul(x, 2 * intermediate, y, intermediate, rows, intermediate);
}

void CpuBackend::moe(const T* x, int64_t rows, const kernels::MoeWeights<T>& weights, T* out) {
  kc::moe_forward(x, rows, limits_.moe, weights, out);
}

void CpuBackend::gdn_split(const T* qkvz, const T* ba, int64_t rows, const kernels::GdnDims& dims,
                           kernels::QkvzLayout layout, T* mixed_qkv, T* z, T* b, T* a) {
  kc::fused_qkvzba_split_reshape_cat(qkvz, dims.conv_dim() + dims.value_dim(), ba, 2 * dims.num_v_heads, rows, dims,
                                     layout, mixed_qkv, z, b, a);
}

void CpuBackend::gdn_decode(const kernels::GdnDecodeInputs<T>& in, const kernels::GdnDecodeState& state, int64_t batch,
                            const kernels::GdnDims& dims, T* out, const kernels::Fp8Rows* fp8_out) {
  refuse_fp8_rows(fp8_out, "gdn_decode");
  kc::gdn_decode(in, state, batch, dims, out);
}

void CpuBackend::gdn_conv_prefill(const T* x, int64_t ldx, const T* weight, int64_t channels, float* conv_pool,
                                  const kernels::GdnVarlenBatch& batch, T* out) {
  kc::gdn_conv_prefill(x, ldx, weight, channels, conv_pool, batch, out);
}

void CpuBackend::gdn_gating(const T* a, int64_t lda, const T* b, int64_t ldb, const float* A_log,
                            const float* dt_bias, int64_t rows, int64_t heads, float* g, float* beta) {
  kc::gdn_gating(a, lda, b, ldb, A_log, dt_bias, rows, heads, g, beta);
}

void CpuBackend::gated_delta_rule_prefill(const T* qkv, int64_t ld, const float* g, const float* beta,
                                          float* state_pool, const kernels::GdnVarlenBatch& batch,
                                          const kernels::GdnDims& dims, T* out) {
  kc::gated_delta_rule_prefill(qkv, qkv + dims.key_dim(), qkv + 2 * dims.key_dim(), ld, g, beta, state_pool, batch,
                               dims, out);
}

void CpuBackend::gated_rms_norm(const T* x, const T* z, int64_t ldz, const T* w, int64_t rows, int64_t heads,
                                int64_t head_dim, float eps, T* out) {
  kc::gated_rms_norm(x, z, ldz, w, rows, heads, head_dim, eps, out);
}

void CpuBackend::qk_norm_rope(const T* qg, int64_t ldqg, const T* k, int64_t ldk, const T* q_norm, const T* k_norm,
                              float eps, const int32_t* positions, int64_t rows, int64_t q_heads, int64_t kv_heads,
                              const kernels::RopeParams& rope, T* q_out, T* k_out) {
  kc::qk_norm_rope(qg, ldqg, k, ldk, q_norm, k_norm, eps, positions, rows, q_heads, kv_heads, rope, q_out, k_out);
}

void CpuBackend::write_kv(const T* k, int64_t ldk, const T* v, int64_t ldv, const kernels::AttentionBatch& batch,
                          const kernels::PagedKvCache<T>& cache) {
  kc::write_kv(k, ldk, v, ldv, batch, cache);
}

void CpuBackend::attention(const kernels::AttentionIo<T>& io, const kernels::AttentionBatch& batch,
                           const kernels::PagedKvCache<T>& cache) {
  kc::attention(io, batch, cache);
}

void CpuBackend::sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                        const kernels::SamplingParams* params, int32_t* tokens, float* logprobs) {
  kc::sample(logits, ld, rows, vocab, params, tokens, logprobs);
}

}  // namespace ds::worker
