#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/activation.h"
#include "kernels/cuda_utils.cuh"
#include "kernels/fp8_quant.cuh"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;
using cuda_utils::check_launch;
using cuda_utils::grid_dim;

constexpr int kThreads = 256;

__device__ __forceinline__ __nv_bfloat16 silu_mul(const __nv_bfloat16* x_row, int64_t I, int64_t i) {
  const float gate = __bfloat162float(x_row[i]), up = __bfloat162float(x_row[I + i]);
  return __float2bfloat16(gate / (1.f + expf(-gate)) * up);
}

__global__ void silu_and_mul_kernel(const __nv_bfloat16* x, int64_t ldx, __nv_bfloat16* y, int64_t ldy, int64_t T,
                                    int64_t I) {
  cuda_utils::allow_dependent_launch();  // down_proj starts streaming its weights
  cuda_utils::wait_for_previous_grids();  // launched programmatically: x is the GEMM's before
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= T * I) return;
  const int64_t t = idx / I, i = idx % I;
  y[t * ldy + i] = silu_mul(x + t * ldx, I, i);
}

// The same with the output also quantized (Fp8Rows): a warp per (token, 128-group), 4 values per
// lane (kernels/fp8_quant.cuh), so bit-identical to quantizing y after.
__global__ void silu_and_mul_fp8_kernel(const __nv_bfloat16* x, int64_t ldx, __nv_bfloat16* y, int64_t ldy, int64_t T,
                                        int64_t I, uint8_t* codes, float* scales) {
  cuda_utils::allow_dependent_launch();
  cuda_utils::wait_for_previous_grids();
  const int64_t groups = I / kFp8BlockSize;
  const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;  // t · groups + g
  if (item >= T * groups) return;
  const int64_t t = item / groups, g = item % groups;
  const int lane = threadIdx.x & 31;
  float v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t i = g * kFp8BlockSize + lane * 4 + j;
    const __nv_bfloat16 out = silu_mul(x + t * ldx, I, i);
    y[t * ldy + i] = out;
    v[j] = __bfloat162float(out);
  }
  fp8_quant::store_warp_group(v, codes + t * I + g * kFp8BlockSize, scales + g * T + t);
}

// One block per token; threads copy (or zero) the row in 16-byte pieces when `vectorized`
// (H % 8 == 0 and 16-byte aligned table and out).
__global__ void embedding_kernel(const int32_t* ids, const __nv_bfloat16* table, int64_t vocab_start, int64_t rows,
                                 int64_t H, __nv_bfloat16* out, bool vectorized) {
  const int64_t t = blockIdx.x;
  const int64_t row = int64_t(ids[t]) - vocab_start;
  const bool inside = row >= 0 && row < rows;
  __nv_bfloat16* dst = out + t * H;
  if (vectorized) {
    const uint4* src = reinterpret_cast<const uint4*>(table + (inside ? row : 0) * H);
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[i] = inside ? src[i] : make_uint4(0, 0, 0, 0);
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) dst[i] = inside ? table[row * H + i] : __float2bfloat16(0.f);
  }
}

__global__ void add_inplace_kernel(__nv_bfloat16* y, const __nv_bfloat16* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(x[i]));
}

__global__ void bf16_to_float_kernel(const __nv_bfloat16* x, float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __bfloat162float(x[i]);
}

__global__ void float_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(x[i]);
}

}  // namespace

void silu_and_mul(const bf16* x, int64_t ldx, bf16* y, int64_t ldy, int64_t T, int64_t I, cudaStream_t stream,
                  const Fp8Rows* fp8_out) {
  if (T < 0 || I <= 0 || ldx < 2 * I || ldy < I) {
    throw std::invalid_argument("cuda::silu_and_mul: bad shape T=" + std::to_string(T) + " I=" + std::to_string(I));
  }
  if (fp8_out &&
      (I % kFp8BlockSize != 0 || !fp8_out->codes || !fp8_out->scales || !cuda_utils::is_aligned(fp8_out->codes, 4))) {
    throw std::invalid_argument("cuda::silu_and_mul: the FP8 output needs I % 128 == 0 (I=" + std::to_string(I) +
                                ") and 4-byte aligned codes");
  }
  if (T == 0) return;
  // Programmatic: the blocks are resident when the GEMM before finishes (the skinny kernel lets
  // its dependents launch once its weights stream) and start at once.
  if (fp8_out) {
    cuda_utils::launch_programmatic(silu_and_mul_fp8_kernel, dim3(grid_dim(T * I / kFp8BlockSize * 32, kThreads)),
                                    dim3(kThreads), 0, stream, "cuda::silu_and_mul", as_nv(x), ldx, as_nv(y), ldy, T, I,
                                    fp8_out->codes, fp8_out->scales);
  } else {
    cuda_utils::launch_programmatic(silu_and_mul_kernel, dim3(grid_dim(T * I, kThreads)), dim3(kThreads), 0, stream,
                                    "cuda::silu_and_mul", as_nv(x), ldx, as_nv(y), ldy, T, I);
  }
}

void embedding_lookup(const int32_t* ids, int64_t T, const bf16* table, int64_t vocab_start, int64_t rows, int64_t H,
                      bf16* out, cudaStream_t stream) {
  if (T < 0 || H <= 0 || rows < 0) throw std::invalid_argument("cuda::embedding_lookup: bad shape");
  if (T == 0) return;
  const bool vectorized = H % 8 == 0 && cuda_utils::is_aligned(table, 16) && cuda_utils::is_aligned(out, 16);
  embedding_kernel<<<unsigned(T), kThreads, 0, stream>>>(ids, as_nv(table), vocab_start, rows, H, as_nv(out),
                                                         vectorized);
  check_launch("cuda::embedding_lookup");
}

void add_inplace(bf16* y, const bf16* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_inplace_kernel<<<grid_dim(n, kThreads), kThreads, 0, stream>>>(as_nv(y), as_nv(x), n);
  check_launch("cuda::add_inplace");
}

void bf16_to_float(const bf16* x, float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  bf16_to_float_kernel<<<grid_dim(n, kThreads), kThreads, 0, stream>>>(as_nv(x), y, n);
  check_launch("cuda::bf16_to_float");
}

void float_to_bf16(const float* x, bf16* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  float_to_bf16_kernel<<<grid_dim(n, kThreads), kThreads, 0, stream>>>(x, as_nv(y), n);
  check_launch("cuda::float_to_bf16");
}

}  // namespace ds::kernels::cuda
