// The CUDA backend: BF16 weights and activations (block-FP8 linear weights kept as E4M3 codes +
// 128x128 scales), fp32 GDN states and logits, through the ds::kernels::cuda ops on one stream.
// Same op names and argument order as CpuBackend.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/attention.h"
#include "kernels/gdn_decode.h"
#include "kernels/gdn_projection.h"
#include "kernels/gdn_types.h"
#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "weights/dtype.h"
#include "worker/backend/cpu_backend.h"
#include "worker/backend/memory.h"
#include "worker/communicator.h"

namespace ds::worker {

class CudaBackend {
 public:
  using T = kernels::bf16;
  static constexpr MemoryKind kMemory = MemoryKind::kCuda;
  static constexpr const char* kName = "cuda";
  static constexpr weights::DType kDType = weights::DType::BF16;
  static constexpr CommDType kCommDType = CommDType::kBFloat16;
  // Block-FP8 linear weights stay FP8 in GPU memory (half of BF16) and run through the FP8 GEMMs.
  static constexpr bool kKeepsFp8 = true;

  explicit CudaBackend(const BackendLimits& limits);
  ~CudaBackend();
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  cudaStream_t stream() const { return stream_; }
  size_t workspace_bytes() const;

  // y [rows, n] = x [rows, k] · Wᵀ: cuBLASLt for BF16 W, GemmRunner::gemm_fp8 for block-FP8 W (which
  // reads x_fp8, x quantized by the op that wrote it, where its W8A8 kernel runs).
  void linear(const T* x, int64_t ldx, const LinearWeight<T>& w, T* y, int64_t ldy, int64_t rows, int64_t n, int64_t k,
              const kernels::Fp8Rows* x_fp8 = nullptr);
  void gemm_f32(const T* x, int64_t ldx, const T* w, float* y, int64_t ldy, int64_t rows, int64_t n, int64_t k);
  void embedding(const int32_t* ids, int64_t rows, const T* table, int64_t vocab_start, int64_t table_rows,
                 int64_t hidden, T* out);
  void gather_rows(const T* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width, T* out);
  // fp8_out: y also quantized for the W8A8 linears that read it (kernels/norm.h, activation.h).
  void rms_norm(const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                const kernels::Fp8Rows* fp8_out = nullptr);
  void add_rms_norm(T* residual, const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                    const kernels::Fp8Rows* fp8_out = nullptr);
  void silu_and_mul(const T* x, T* y, int64_t rows, int64_t intermediate, const kernels::Fp8Rows* fp8_out = nullptr);
  void moe(const T* x, int64_t rows, const kernels::MoeWeights<T>& weights, T* out);
  void moe(const T* x, int64_t rows, const kernels::MoeFp8Weights& weights, T* out,
           const kernels::Fp8Rows* x_fp8 = nullptr);

  void gdn_split(const T* qkvz, const T* ba, int64_t rows, const kernels::GdnDims& dims, kernels::QkvzLayout layout,
                 T* mixed_qkv, T* z, T* b, T* a);
  void gdn_decode(const kernels::GdnDecodeInputs<T>& in, const kernels::GdnDecodeState& state, int64_t batch,
                  const kernels::GdnDims& dims, T* out, const kernels::Fp8Rows* fp8_out = nullptr);
  void gdn_conv_prefill(const T* x, int64_t ldx, const T* weight, int64_t channels, float* conv_pool,
                        const kernels::GdnVarlenBatch& batch, T* out);
  void gdn_gating(const T* a, int64_t lda, const T* b, int64_t ldb, const float* A_log, const float* dt_bias,
                  int64_t rows, int64_t heads, float* g, float* beta);
  void gated_delta_rule_prefill(const T* qkv, int64_t ld, const float* g, const float* beta, float* state_pool,
                                const kernels::GdnVarlenBatch& batch, const kernels::GdnDims& dims, T* out);
  void gated_rms_norm(const T* x, const T* z, int64_t ldz, const T* w, int64_t rows, int64_t heads, int64_t head_dim,
                      float eps, T* out);

  void qk_norm_rope(const T* qg, int64_t ldqg, const T* k, int64_t ldk, const T* q_norm, const T* k_norm, float eps,
                    const int32_t* positions, int64_t rows, int64_t q_heads, int64_t kv_heads,
                    const kernels::RopeParams& rope, T* q_out, T* k_out);
  void write_kv(const T* k, int64_t ldk, const T* v, int64_t ldv, const kernels::AttentionBatch& batch,
                const kernels::PagedKvCache<T>& cache);
  void attention(const kernels::AttentionIo<T>& io, const kernels::AttentionBatch& batch,
                 const kernels::PagedKvCache<T>& cache);

  // logits fp32 [rows][ld] where the backend computes; params, tokens and logprobs on the host.
  void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const kernels::SamplingParams* params,
              int32_t* tokens, float* logprobs);

 private:
  BackendLimits limits_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::cuda::GemmRunner> gemm_;
  std::unique_ptr<kernels::cuda::MoeRunner> moe_;
  Buffer gdn_prefill_workspace_;
  Buffer attention_workspace_;
  Buffer sample_io_;  // params, tokens and logprobs of one sample() call
};

// worker/backend/cuda_gather.cu: out[i] = x[row_ids[i]] (rows of `width` BF16 elements).
void cuda_gather_rows(const kernels::bf16* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width,
                      kernels::bf16* out, cudaStream_t stream);

}  // namespace ds::worker
