#include "worker/backend/cuda_backend.h"

#include <cuda_runtime_api.h>

#include "kernels/activation.h"
#include "kernels/gated_delta_rule.h"
#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_gating.h"
#include "kernels/norm.h"
#include "kernels/sampling.h"

namespace ds::worker {

namespace kc = ds::kernels::cuda;

namespace {
// The chunked GDN prefill's workspace grows with the number of sequences (per-chunk states): sized
// for max_tokens sequences it would take 37 GiB at qwen3.5-9b's 8192 tokens, for 64 it takes
// 0.84 GiB. A step with more prefill sequences falls back to the recurrent prefill kernel
// (gated_delta_rule_prefill's own dispatch), which needs no workspace.
constexpr int64_t kChunkedPrefillMaxSeqs = 64;
}  // namespace

CudaBackend::CudaBackend(const BackendLimits& limits) : limits_(limits) {
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  gemm_ = std::make_unique<kc::GemmRunner>();
  if (limits.fp8_max_k > 0) gemm_->reserve_fp8(limits.max_tokens, limits.fp8_max_k, limits.fp8_max_n, stream_);
  gemm_->set_fp8_numerics(limits.fp8_numerics);
  if (limits.moe.num_experts > 0) moe_ = std::make_unique<kc::MoeRunner>(limits.moe, limits.max_tokens);
  if (limits.gdn.num_v_heads > 0) {
    gdn_prefill_workspace_ = Buffer(
        kMemory, kc::gated_delta_rule_prefill_workspace_bytes(limits.max_tokens, kChunkedPrefillMaxSeqs, limits.gdn));
  }
  if (limits.num_q_heads > 0) {
    attention_workspace_ =
        Buffer(kMemory, kc::attention_workspace_bytes(limits.max_tokens, limits.num_q_heads, limits.head_dim));
  }
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

size_t CudaBackend::workspace_bytes() const {
  return gdn_prefill_workspace_.bytes() + attention_workspace_.bytes() + gemm_->fp8_scratch_bytes();
}

void CudaBackend::linear(const T* x, int64_t ldx, const LinearWeight<T>& w, T* y, int64_t ldy, int64_t rows, int64_t n,
                         int64_t k, const kernels::Fp8Rows* x_fp8) {
  if (rows == 0) return;
  if (w.fp8 != nullptr) {
    gemm_->gemm_fp8(x, ldx, w.fp8, w.scale_inv, y, ldy, rows, n, k, 0.f, stream_, kc::Fp8Path::kAuto, x_fp8);
  } else {
    gemm_->gemm(x, ldx, w.w, y, ldy, rows, n, k, 0.f, stream_);
  }
}

void CudaBackend::gemm_f32(const T* x, int64_t ldx, const T* w, float* y, int64_t ldy, int64_t rows, int64_t n,
                           int64_t k) {
  if (rows > 0) gemm_->gemm(x, ldx, w, y, ldy, rows, n, k, 0.f, stream_);
}

void CudaBackend::embedding(const int32_t* ids, int64_t rows, const T* table, int64_t vocab_start,
                            int64_t table_rows, int64_t hidden, T* out) {
  kc::embedding_lookup(ids, rows, table, vocab_start, table_rows, hidden, out, stream_);
}

void CudaBackend::gather_rows(const T* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width, T* out) {
  cuda_gather_rows(x, ldx, row_ids, rows, width, out, stream_);
}

void CudaBackend::rms_norm(const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                           const kernels::Fp8Rows* fp8_out) {
  kc::rms_norm(x, hidden, w, y, hidden, rows, hidden, eps, stream_, fp8_out);
}

void CudaBackend::add_rms_norm(T* residual, const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                               const kernels::Fp8Rows* fp8_out) {
  kc::add_rms_norm(residual, x, hidden, w, y, hidden, rows, hidden, eps, stream_, fp8_out);
}

void CudaBackend::silu_and_mul(const T* x, T* y, int64_t rows, int64_t intermediate, const kernels::Fp8Rows* fp8_out) {
  kc::silu_and_mul(x, 2 * intermediate, y, intermediate, rows, intermediate, stream_, fp8_out);
}

void CudaBackend::moe(const T* x, int64_t rows, const kernels::MoeWeights<T>& weights, T* out) {
  moe_->forward(*gemm_, x, rows, weights, out, stream_);
}

void CudaBackend::moe(const T* x, int64_t rows, const kernels::MoeFp8Weights& weights, T* out,
                      const kernels::Fp8Rows* x_fp8) {
  moe_->forward(*gemm_, x, rows, weights, out, stream_, x_fp8);
}

void CudaBackend::gdn_split(const T* qkvz, const T* ba, int64_t rows, const kernels::GdnDims& dims,
                            kernels::QkvzLayout layout, T* mixed_qkv, T* z, T* b, T* a) {
  kc::fused_qkvzba_split_reshape_cat(qkvz, dims.conv_dim() + dims.value_dim(), ba, 2 * dims.num_v_heads, rows, dims,
                                     layout, mixed_qkv, z, b, a, stream_);
}

void CudaBackend::gdn_decode(const kernels::GdnDecodeInputs<T>& in, const kernels::GdnDecodeState& state, int64_t batch,
                             const kernels::GdnDims& dims, T* out, const kernels::Fp8Rows* fp8_out) {
  kc::gdn_decode(in, state, batch, dims, out, stream_, fp8_out);
}

void CudaBackend::gdn_conv_prefill(const T* x, int64_t ldx, const T* weight, int64_t channels, float* conv_pool,
                                   const kernels::GdnVarlenBatch& batch, T* out) {
  kc::gdn_conv_prefill(x, ldx, weight, channels, conv_pool, batch, out, stream_);
}

void CudaBackend::gdn_gating(const T* a, int64_t lda, const T* b, int64_t ldb, const float* A_log,
                             const float* dt_bias, int64_t rows, int64_t heads, float* g, float* beta) {
  kc::gdn_gating(a, lda, b, ldb, A_log, dt_bias, rows, heads, g, beta, stream_);
}

void CudaBackend::gated_delta_rule_prefill(const T* qkv, int64_t ld, const float* g, const float* beta,
                                           float* state_pool, const kernels::GdnVarlenBatch& batch,
                                           const kernels::GdnDims& dims, T* out) {
  kc::gated_delta_rule_prefill(qkv, qkv + dims.key_dim(), qkv + 2 * dims.key_dim(), ld, g, beta, state_pool, batch,
                               dims, gdn_prefill_workspace_.data(), gdn_prefill_workspace_.bytes(), out, stream_);
}

void CudaBackend::gated_rms_norm(const T* x, const T* z, int64_t ldz, const T* w, int64_t rows, int64_t heads,
                                 int64_t head_dim, float eps, T* out) {
  kc::gated_rms_norm(x, z, ldz, w, rows, heads, head_dim, eps, out, stream_);
}

void CudaBackend::qk_norm_rope(const T* qg, int64_t ldqg, const T* k, int64_t ldk, const T* q_norm, const T* k_norm,
                               float eps, const int32_t* positions, int64_t rows, int64_t q_heads, int64_t kv_heads,
                               const kernels::RopeParams& rope, T* q_out, T* k_out) {
  kc::qk_norm_rope(qg, ldqg, k, ldk, q_norm, k_norm, eps, positions, rows, q_heads, kv_heads, rope, q_out, k_out,
                   stream_);
}

void CudaBackend::write_kv(const T* k, int64_t ldk, const T* v, int64_t ldv, const kernels::AttentionBatch& batch,
                           const kernels::PagedKvCache<T>& cache) {
  kc::write_kv(k, ldk, v, ldv, batch, cache, stream_);
}

void CudaBackend::attention(const kernels::AttentionIo<T>& io, const kernels::AttentionBatch& batch,
                            const kernels::PagedKvCache<T>& cache) {
  kc::attention(io, batch, cache, attention_workspace_.data(), attention_workspace_.bytes(), stream_);
}

void CudaBackend::sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                         const kernels::SamplingParams* params, int32_t* tokens, float* logprobs) {
  const size_t params_bytes = (rows * sizeof(kernels::SamplingParams) + 255) / 256 * 256;
  const size_t out_bytes = (rows * sizeof(int32_t) + 255) / 256 * 256;
  if (sample_io_.bytes() < params_bytes + 2 * out_bytes) sample_io_ = Buffer(kMemory, 2 * (params_bytes + 2 * out_bytes));
  auto* d_params = sample_io_.as<kernels::SamplingParams>();
  auto* d_tokens = reinterpret_cast<int32_t*>(sample_io_.as<std::byte>() + params_bytes);
  auto* d_logprobs = reinterpret_cast<float*>(sample_io_.as<std::byte>() + params_bytes + out_bytes);
  copy_to(kMemory, d_params, params, rows * sizeof(kernels::SamplingParams), stream_);
  kc::sample(logits, ld, rows, vocab, d_params, d_tokens, d_logprobs, stream_);
  copy_from(kMemory, tokens, d_tokens, rows * sizeof(int32_t), stream_);
  copy_from(kMemory, logprobs, d_logprobs, rows * sizeof(float), stream_);
  synchronize(kMemory, stream_);
}

}  // namespace ds::worker

