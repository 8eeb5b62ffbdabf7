// Dense GEMM for every linear layer: y[T, N] = x[T, K] · W[N, K]ᵀ (+ beta · y).
//
// W is stored like the checkpoint, row-major [out = N, in = K]. x and y are row-major with row
// strides ldx >= K and ldy >= N (elements), so a GEMM can read or write a column slice of a wider
// buffer (e.g. write q_proj and k_proj outputs into one [T, N_q + N_k] buffer, or read a view).
//
// FP8 weights (block-FP8 checkpoints, quantization_config {"quant_method": "fp8",
// "weight_block_size": [128, 128]}): W_fp8 is E4M3 bytes [N, K]; weight_scale_inv is fp32
// [ceil(N/128), ceil(K/128)] row-major, and the real weight is W[n][k] = fp8(W_fp8[n][k]) ·
// weight_scale_inv[n/128][k/128]. Activations stay BF16 in our FP8 path: the CUDA kernel
// dequantizes 128×128 weight blocks on the fly into shared memory and runs BF16 tensor-core MMA
// with fp32 accumulation (no 1×128 activation quantization; that would only lose accuracy). The CPU
// reference dequantizes W and calls sgemm, so both compute the same math.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "kernels/common.h"

namespace ds::kernels {

inline constexpr int64_t kFp8BlockSize = 128;  // weight_block_size of every published FP8 checkpoint

// E4M3 (fn variant: no infinities, NaN = 0x7f/0xff, max 448) to float, exact.
float fp8_e4m3_to_float(uint8_t v);

namespace cpu {

// y = x·Wᵀ + beta·y through OpenBLAS cblas_sgemm (beta = 0: y is not read, so it may hold garbage).
void gemm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
          float beta = 0.f);

// Block-FP8 weight: dequantizes W (N·K floats of scratch) then gemm().
void gemm_fp8(const float* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, float* y,
              int64_t ldy, int64_t T, int64_t N, int64_t K, float beta = 0.f);

// W_fp8 [N, K] with weight_scale_inv [ceil(N/128), ceil(K/128)] -> fp32 [N, K].
void dequantize_fp8_weight(const uint8_t* w_fp8, const float* weight_scale_inv, int64_t N, int64_t K, float* w);

}  // namespace cpu

namespace cuda {

// Owns a cuBLASLt handle and workspace (on the device current at construction) and caches one
// plan (matmul descriptor, layouts, algorithm) per distinct problem, so the steady state makes no
// cuBLASLt descriptor calls. For T <= 256 the first call of a shape with beta == 0 on a stream that
// is not capturing times cuBLASLt's top heuristic candidates on the real operands (synchronising
// the stream once) and keeps the fastest; otherwise the first heuristic pick is used. Not thread-safe: one runner per worker thread/stream.
// Every call is asynchronous on `stream` and CUDA-graph capturable once its plan exists.
// Errors (bad sizes, cuBLASLt failures) throw std::runtime_error naming the shape.
class GemmRunner {
 public:
  explicit GemmRunner(size_t workspace_bytes = size_t(32) << 20);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // BF16 x, W, y; fp32 accumulation; y = x·Wᵀ + beta·y (beta applied to the bf16 y).
  void gemm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
            float beta, cudaStream_t stream);
  // Same with an fp32 output (router logits, lm_head logits for sampling).
  void gemm(const bf16* x, int64_t ldx, const bf16* w, float* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
            float beta, cudaStream_t stream);

  // Block-FP8 weight (layout above), BF16 x and y, fp32 accumulation. Our own kernel (see the file
  // comment); ldx, ldy and K must be multiples of 8 (16-byte rows), T, N any.
  void gemm_fp8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream);

  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  struct Operands {
    const void* x;
    const void* w;
    void* y;
    float beta;
    cudaStream_t stream;
  };
  // T, N, K, ldx, ldy, fp32 output, pointer alignment in bytes (1..16, cuBLASLt picks algorithms by it)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;
  const Plan& plan_for(const Key& key, const Operands& operands);
  void run(const void* x, int64_t ldx, const void* w, void* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
           float beta, bool out_f32, cudaStream_t stream);

  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan*> plans_;
};

}  // namespace cuda

}  // namespace ds::kernels
