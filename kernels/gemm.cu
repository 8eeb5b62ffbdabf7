#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/attention_mma.cuh"
#include "kernels/gemm.h"

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
const GemmRunner::Plan& GemmRunner::plan_for(const Key& key) {
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
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout,
                                       plan->x_layout, plan->y_layout, plan->y_layout, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(st, "heuristic", shape);
    if (found == 0) throw std::runtime_error("cuBLASLt found no algorithm for " + shape);
    plan->algo = result.algo;
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
  const Plan& plan = plan_for(Key{T, N, K, ldx, ldy, out_f32, alignment});
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

// ---------------------------------------------------------------------------------------------
// Block-FP8 weight GEMM. A 128-thread block computes a 64×64 tile of y; warps form a 2×2 grid of
// 32×32 sub-tiles (2 m-tiles × 4 n-tiles of mma.m16n8k16 each). Per 64-wide k-step, the x tile
// (BF16) and the W tile (FP8, converted exactly to BF16 — every E4M3 value is a BF16 value) go to
// swizzled shared memory. Products of one 128-wide k block accumulate unscaled in `part`; at the
// block's end they are multiplied by that block's weight_scale_inv (uniform over the tile: 64
// rows of W never straddle a 128-row scale block) and added to `acc`. So the weight is applied
// exactly, and the only rounding beyond fp32 is x's own BF16.
namespace fp8 {

constexpr int kBM = 64, kBN = 64, kBK = 64, kThreads = 128;
constexpr int kChunks = kBK / 8;  // 16-byte chunks per tile row

__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 raw) {
  const uint32_t words[2] = {raw.x, raw.y};
  uint32_t out[4];
#pragma unroll
  for (int w = 0; w < 2; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __nv_fp8x2_storage_t pair = __nv_fp8x2_storage_t(words[w] >> (16 * h));
      const __half2_raw halves = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&halves));
      out[w * 2 + h] = mma::pack_bf16x2(f.x, f.y);
    }
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

__global__ void __launch_bounds__(kThreads) gemm_fp8_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx,
                                                             const uint8_t* __restrict__ w,
                                                             const float* __restrict__ scale_inv,
                                                             __nv_bfloat16* __restrict__ y, int64_t ldy, int64_t T,
                                                             int64_t N, int64_t K, float beta) {
  __shared__ __align__(16) uint4 xs[kBM * kChunks];
  __shared__ __align__(16) uint4 ws[kBN * kChunks];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n0 = int64_t(blockIdx.x) * kBN, t0 = int64_t(blockIdx.y) * kBM;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int64_t scale_cols = (K + kFp8BlockSize - 1) / kFp8BlockSize;

  float acc[2][4][4] = {}, part[2][4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    for (int i = tid; i < kBM * kChunks; i += kThreads) {
      const int row = i / kChunks, chunk = i % kChunks;
      const int64_t t = t0 + row, k = k0 + chunk * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t < T && k < K) v = *reinterpret_cast<const uint4*>(x + t * ldx + k);
      xs[mma::swizzled_chunk(row, chunk, kChunks)] = v;
    }
    for (int i = tid; i < kBN * kChunks; i += kThreads) {
      const int row = i / kChunks, chunk = i % kChunks;
      const int64_t n = n0 + row, k = k0 + chunk * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (n < N && k < K) v = fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(w + n * K + k));
      ws[mma::swizzled_chunk(row, chunk, kChunks)] = v;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t a[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) mma::ldmatrix_x4(a[mi], &xs[mma::a_fragment_chunk(lane, wm + mi * 16, ks * 2, kChunks)]);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, &ws[mma::b_fragment_chunk(lane, wn + np * 16, ks * 2, kChunks)]);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma::mma_bf16(part[mi][np * 2], a[mi], b[0], b[1]);
          mma::mma_bf16(part[mi][np * 2 + 1], a[mi], b[2], b[3]);
        }
      }
    }
    __syncthreads();
    const int64_t k_end = k0 + kBK;
    if (k_end % kFp8BlockSize == 0 || k_end >= K) {
      const float s = scale_inv[(n0 / kFp8BlockSize) * scale_cols + k0 / kFp8BlockSize];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[mi][ni][e] += part[mi][ni][e] * s;
            part[mi][ni][e] = 0.f;
          }
    }
  }
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t t = t0 + wm + mi * 16 + g + (e >= 2 ? 8 : 0);
        const int64_t n = n0 + wn + ni * 8 + 2 * c + (e & 1);
        if (t < T && n < N) {
          __nv_bfloat16* dst = y + t * ldy + n;
          const float prior = beta != 0.f ? beta * __bfloat162float(*dst) : 0.f;
          *dst = __float2bfloat16(acc[mi][ni][e] + prior);
        }
      }
}

}  // namespace fp8

void GemmRunner::gemm_fp8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                          int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream) {
  check_shape("cuda::GemmRunner::gemm_fp8", T, N, K, ldx, ldy);
  if (K % 8 != 0 || ldx % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w_fp8) % 8 != 0) {
    throw std::invalid_argument("cuda::GemmRunner::gemm_fp8: K and ldx must be multiples of 8 and x/W 16/8-byte aligned (" +
                                shape_string(T, N, K, ldx, ldy) + ")");
  }
  if (T == 0) return;
  const dim3 grid(unsigned((N + fp8::kBN - 1) / fp8::kBN), unsigned((T + fp8::kBM - 1) / fp8::kBM));
  fp8::gemm_fp8_kernel<<<grid, fp8::kThreads, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(x), ldx, w_fp8,
                                                           weight_scale_inv, reinterpret_cast<__nv_bfloat16*>(y), ldy,
                                                           T, N, K, beta);
  check_cuda(cudaGetLastError(), "gemm_fp8 launch");
}

}  // namespace ds::kernels::cuda
