#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/gemm.h"
#include "kernels/gemm_tile.cuh"

namespace ds::kernels::cuda {

namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

void check_lt(cublasStatus_t st, const char* what, const std::string& shape) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed (status " + std::to_string(int(st)) +
                             ") for " + shape);
  }
}

std::string shape_string(int64_t T, int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  return "GEMM T=" + std::to_string(T) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
         " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy);
}

void check_shape(const char* op, int64_t T, int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  if (T < 0 || N <= 0 || K <= 0 || ldx < K || ldy < N || T > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
    throw std::invalid_argument(std::string(op) + ": bad " + shape_string(T, N, K, ldx, ldy));
  }
}

// Largest power of two (<= 16) dividing the address and the row pitch in bytes.
int alignment_of(const void* p, int64_t row_bytes) {
  const uint64_t bits = reinterpret_cast<uint64_t>(p) | uint64_t(row_bytes) | 16u;
  return int(bits & (~bits + 1));
}

constexpr int kAutotuneCandidates = 8;
constexpr int kAutotuneRuns = 3;
constexpr int64_t kAutotuneMaxTokens = 256;

// Small-T GEMMs are weight-bound and cuBLASLt's first heuristic pick is often not the fastest
// there, so the first call of such a shape times the candidates on the real operands and keeps the
// fastest. Only when that is harmless: y is write-only (beta == 0) and the stream is not being
// captured into a graph.
bool may_time(int64_t T, float beta, cudaStream_t stream) {
  if (T > kAutotuneMaxTokens || beta != 0.f) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone;
}

// One matmul y = x·Wᵀ (beta 0) with the given algorithm.
struct MatmulCall {
  cublasLtHandle_t handle;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t w_layout, x_layout, y_layout;
  const void *x, *w;
  void* y;
  void* workspace;
  size_t workspace_bytes;
  cudaStream_t stream;

  cublasStatus_t operator()(const cublasLtMatmulAlgo_t& algo) const {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(handle, desc, &alpha, w, w_layout, x, x_layout, &beta, y, y_layout, y, y_layout, &algo,
                          workspace, workspace_bytes, stream);
  }
};

// The fastest of the candidates over kAutotuneRuns timed runs each (candidates that refuse these
// operands are skipped; the first candidate is the fallback).
cublasLtMatmulAlgo_t fastest(const MatmulCall& call, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                             const std::string& shape) {
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), "autotune event");
  check_cuda(cudaEventCreate(&stop), "autotune event");
  float best_ms = INFINITY;
  cublasLtMatmulAlgo_t best = candidates[0].algo;
  for (int i = 0; i < count; ++i) {
    if (call(candidates[i].algo) != CUBLAS_STATUS_SUCCESS) {  // also the warm-up run
      // A refused candidate can leave its failed launch in the runtime's last-error slot, which
      // the next kernel's launch check would then report as its own failure.
      cudaGetLastError();
      continue;
    }
    check_cuda(cudaEventRecord(start, call.stream), "autotune record");
    for (int r = 0; r < kAutotuneRuns; ++r) check_lt(call(candidates[i].algo), "matmul (autotune)", shape);
    check_cuda(cudaEventRecord(stop, call.stream), "autotune record");
    check_cuda(cudaEventSynchronize(stop), "autotune sync");
    float ms = 0.f;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "autotune elapsed");
    if (ms < best_ms) {
      best_ms = ms;
      best = candidates[i].algo;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace

struct GemmRunner::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
    if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
    if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

GemmRunner::GemmRunner(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  cublasLtHandle_t handle;
  check_lt(cublasLtCreate(&handle), "create", "handle");
  handle_ = handle;
  if (workspace_bytes_ > 0) check_cuda(cudaMalloc(&workspace_, workspace_bytes_), "GemmRunner workspace cudaMalloc");
}

GemmRunner::~GemmRunner() {
  for (auto& [key, plan] : plans_) delete plan;
  if (workspace_) cudaFree(workspace_);
  cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

// Row-major y[T,N] = x[T,K]·W[N,K]ᵀ is column-major yᵀ[N,T] = op(W)·xᵀ with W read as a K×N
// column-major matrix transposed: A = W (K×N, ld K, op T), B = x (K×T, ld ldx), D = y (N×T, ld ldy).
const GemmRunner::Plan& GemmRunner::plan_for(const Key& key, const Operands& operands) {
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
  const auto [T, N, K, ldx, ldy, out_f32, alignment] = key;
  const std::string shape = shape_string(T, N, K, ldx, ldy);
  auto plan = new Plan;
  try {
    check_lt(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc", shape);
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)),
             "set transa", shape);
    check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)),
             "set transb", shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_16BF, uint64_t(K), uint64_t(N), K), "W layout", shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->x_layout, CUDA_R_16BF, uint64_t(K), uint64_t(T), ldx), "x layout",
             shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->y_layout, out_f32 ? CUDA_R_32F : CUDA_R_16BF, uint64_t(N), uint64_t(T),
                                        ldy),
             "y layout", shape);
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference", shape);
    const uint32_t align = uint32_t(alignment);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                         sizeof(workspace_bytes_));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
    }
    cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates] = {};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
        static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, plan->x_layout, plan->y_layout,
        plan->y_layout, pref, kAutotuneCandidates, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(st, "heuristic", shape);
    if (found == 0) throw std::runtime_error("cuBLASLt found no algorithm for " + shape);
    plan->algo = results[0].algo;
    if (found > 1 && may_time(T, operands.beta, operands.stream)) {
      const MatmulCall call{static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, plan->x_layout,
                            plan->y_layout, operands.x, operands.w, operands.y, workspace_, workspace_bytes_,
                            operands.stream};
      plan->algo = fastest(call, results, found, shape);
    }
  } catch (...) {
    delete plan;
    throw;
  }
  plans_.emplace(key, plan);
  return *plan;
}

void GemmRunner::run(const void* x, int64_t ldx, const void* w, void* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
                     float beta, bool out_f32, cudaStream_t stream) {
  check_shape("cuda::GemmRunner::gemm", T, N, K, ldx, ldy);
  if (T == 0) return;
  const int out_bytes = out_f32 ? 4 : 2;
  const int alignment = std::min({alignment_of(x, ldx * 2), alignment_of(w, K * 2), alignment_of(y, ldy * out_bytes)});
  const Plan& plan = plan_for(Key{T, N, K, ldx, ldy, out_f32, alignment}, Operands{x, w, y, beta, stream});
  const float alpha = 1.f;
  check_lt(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan.desc, &alpha, w, plan.w_layout, x,
                          plan.x_layout, &beta, y, plan.y_layout, y, plan.y_layout, &plan.algo, workspace_,
                          workspace_bytes_, stream),
           "matmul", shape_string(T, N, K, ldx, ldy));
}

void GemmRunner::gemm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t N,
                      int64_t K, float beta, cudaStream_t stream) {
  run(x, ldx, w, y, ldy, T, N, K, beta, false, stream);
}

void GemmRunner::gemm(const bf16* x, int64_t ldx, const bf16* w, float* y, int64_t ldy, int64_t T, int64_t N,
                      int64_t K, float beta, cudaStream_t stream) {
  run(x, ldx, w, y, ldy, T, N, K, beta, true, stream);
}

namespace {

// Block-FP8 weight GEMM: one 64×64 tile per block (kernels/gemm_tile.cuh).
__global__ void __launch_bounds__(gemm_tile::kThreads)
    gemm_fp8_kernel(const __nv_bfloat16* x, int64_t ldx, const uint8_t* w, const float* scale_inv, __nv_bfloat16* y,
                    int64_t ldy, int64_t T, int64_t N, int64_t K, float beta) {
  __shared__ gemm_tile::SharedTiles sh;
  gemm_tile::compute_tile(x, ldx, w, scale_inv, y, ldy, T, N, K, int64_t(blockIdx.y) * gemm_tile::kBM,
                          int64_t(blockIdx.x) * gemm_tile::kBN, beta, sh);
}

}  // namespace

void GemmRunner::gemm_fp8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                          int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream) {
  check_shape("cuda::GemmRunner::gemm_fp8", T, N, K, ldx, ldy);
  if (K % 8 != 0 || ldx % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w_fp8) % 8 != 0) {
    throw std::invalid_argument("cuda::GemmRunner::gemm_fp8: K and ldx must be multiples of 8 and x/W 16/8-byte aligned (" +
                                shape_string(T, N, K, ldx, ldy) + ")");
  }
  if (T == 0) return;
  const dim3 grid(unsigned((N + gemm_tile::kBN - 1) / gemm_tile::kBN), unsigned((T + gemm_tile::kBM - 1) / gemm_tile::kBM));
  gemm_fp8_kernel<<<grid, gemm_tile::kThreads, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(x), ldx, w_fp8,
                                                           weight_scale_inv, reinterpret_cast<__nv_bfloat16*>(y), ldy, T, N,
                                                            K, beta);
  check_cuda(cudaGetLastError(), "gemm_fp8 launch");
}

}  // namespace ds::kernels::cuda
