// The CPU backend: fp32 storage and math through the ds::kernels::cpu references. It runs the
// whole model in CI and is the oracle of the CUDA backend. Every op the model calls has the same
// name and argument order in CudaBackend (worker/backend/cuda_backend.h); the model is written once
// against either (worker/model/qwen3_5_impl.h).
#pragma once

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/gdn_decode.h"
#include "kernels/gdn_projection.h"
#include "kernels/gdn_types.h"
#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "weights/dtype.h"
#include "worker/backend/memory.h"
#include "worker/communicator.h"

namespace ds::worker {

// Sizes the backends' workspaces: the largest step and the layer shapes of this rank.
struct BackendLimits {
  int64_t max_tokens = 0;
  kernels::GdnDims gdn;     // zero when the model has no GDN layer
  int64_t num_q_heads = 0;  // Hq_r of the full-attention layers
  int64_t head_dim = 0;
  kernels::MoeDims moe;     // num_experts = 0 for dense models
  // Block-FP8 checkpoints: the largest K and N of the dense linears (0 otherwise), to size the FP8
  // GEMM scratch once.
  int64_t fp8_max_k = 0;
  int64_t fp8_max_n = 0;
  kernels::cuda::Fp8Numerics fp8_numerics = kernels::cuda::Fp8Numerics::kW8A8;  // what those GEMMs compute
};

// A linear layer's weight [N, K] as the model holds it: in the backend's dtype (w), or as block-FP8
// E4M3 codes (fp8) with their fp32 weight_scale_inv [ceil(N/128), ceil(K/128)] (kernels/gemm.h).
template <typename T>
struct LinearWeight {
  const T* w = nullptr;
  const uint8_t* fp8 = nullptr;
  const float* scale_inv = nullptr;
};

class CpuBackend {
 public:
  using T = float;
  static constexpr MemoryKind kMemory = MemoryKind::kHost;
  static constexpr const char* kName = "cpu";
  static constexpr weights::DType kDType = weights::DType::F32;
  static constexpr CommDType kCommDType = CommDType::kFloat32;
  // The fp32 reference dequantizes block-FP8 weights at load (the model never hands it FP8).
  static constexpr bool kKeepsFp8 = false;

  explicit CpuBackend(const BackendLimits& limits);

  cudaStream_t stream() const { return nullptr; }
  size_t workspace_bytes() const { return 0; }

  // y [rows, n] = x [rows, k] · Wᵀ. The FP8 activation rows (x_fp8 here, fp8_out below) belong to
  // backends that keep FP8 weights; the model never hands them to this one (it throws if it does).
  void linear(const T* x, int64_t ldx, const LinearWeight<T>& w, T* y, int64_t ldy, int64_t rows, int64_t n, int64_t k,
              const kernels::Fp8Rows* x_fp8 = nullptr);
  void gemm_f32(const T* x, int64_t ldx, const T* w, float* y, int64_t ldy, int64_t rows, int64_t n, int64_t k);
  void embedding(const int32_t* ids, int64_t rows, const T* table, int64_t vocab_start, int64_t table_rows,
                 int64_t hidden, T* out);
  void gather_rows(const T* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width, T* out);
  void rms_norm(const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                const kernels::Fp8Rows* fp8_out = nullptr);
  void add_rms_norm(T* residual, const T* x, const T* w, T* y, int64_t rows, int64_t hidden, float eps,
                    const kernels::Fp8Rows* fp8_out = nullptr);
  void silu_and_mul(const T* x, T* y, int64_t rows, int64_t intermediate, const kernels::Fp8Rows* fp8_out = nullptr);
  void moe(const T* x, int64_t rows, const kernels::MoeWeights<T>& weights, T* out);

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
};

}  // namespace ds::worker
