#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/norm.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::check_launch;
using cuda_utils::warp_sum;

constexpr int kRowThreads = 256;

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read from a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = lane < int(blockDim.x >> 5) ? partial[lane] : 0.f;
  return warp_sum(total);
}

// VEC = 8: rows read as uint4 (8 bf16), needs H % 8 == 0 and 16-byte aligned rows; VEC = 1 otherwise.
template <int VEC>
struct Vec {
  __nv_bfloat16 v[VEC];
};

template <int VEC>
__device__ __forceinline__ Vec<VEC> load_vec(const __nv_bfloat16* p) {
  return *reinterpret_cast<const Vec<VEC>*>(p);
}
template <int VEC>
__device__ __forceinline__ void store_vec(__nv_bfloat16* p, const Vec<VEC>& v) {
  *reinterpret_cast<Vec<VEC>*>(p) = v;
}

// The 8 BF16 outputs of a thread (VEC = 8) into E4M3 codes of their 128-group, which the 16
// threads of this half-warp hold (kernels/fp8_quant.cuh).
__device__ __forceinline__ void quantize_group_of_8(const Vec<8>& out, int64_t t, int64_t i, int64_t H, int64_t T,
                                                    uint8_t* codes, float* scales) {
  const unsigned half = (threadIdx.x & 16) ? 0xffff0000u : 0x0000ffffu;
  float v[8], amax = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(out.v[j]), amax = fmaxf(amax, fabsf(v[j]));
#pragma unroll
  for (int offset = 8; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(half, amax, offset));
  const float scale = fp8_quant::group_scale(amax);
  *reinterpret_cast<uint2*>(codes + t * H + i) =
      make_uint2(fp8_quant::codes4(v, scale), fp8_quant::codes4(v + 4, scale));
  if ((threadIdx.x & 15) == 0) scales[(i / kFp8BlockSize) * T + t] = scale;
}

// One block per row. With residual != nullptr: residual += x (rounded to bf16, written back), and
// the normalised row is the new residual; otherwise the row is x itself. kFp8Out (VEC = 8, H % 128
// == 0): the BF16 row is also quantized into codes / scales (Fp8Rows, T = gridDim.x rows).
template <int VEC, bool kFp8Out = false>
__global__ void __launch_bounds__(kRowThreads)
    rms_norm_kernel(__nv_bfloat16* residual, const __nv_bfloat16* x, int64_t ldx, const __nv_bfloat16* w,
                    __nv_bfloat16* y, int64_t ldy, int64_t H, float eps, uint8_t* codes = nullptr,
                    float* scales = nullptr) {
  static_assert(!kFp8Out || VEC == 8, "the FP8 output takes the vector path");
  cuda_utils::allow_dependent_launch();  // the projection after the norm starts streaming its weights
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* x_row = x + t * ldx;
  __nv_bfloat16* r_row = residual ? residual + t * H : nullptr;
  const __nv_bfloat16* src = residual ? r_row : x_row;
  float sum_sq = 0.f;
  for (int64_t i = int64_t(threadIdx.x) * VEC; i < H; i += int64_t(blockDim.x) * VEC) {
    Vec<VEC> v = load_vec<VEC>(x_row + i);
    if (residual) {
      Vec<VEC> r = load_vec<VEC>(r_row + i);
#pragma unroll
      for (int j = 0; j < VEC; ++j) r.v[j] = __float2bfloat16(__bfloat162float(r.v[j]) + __bfloat162float(v.v[j]));
      store_vec<VEC>(r_row + i, r);
      v = r;
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float f = __bfloat162float(v.v[j]);
      sum_sq += f * f;
    }
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / float(H) + eps);
  for (int64_t i = int64_t(threadIdx.x) * VEC; i < H; i += int64_t(blockDim.x) * VEC) {
    const Vec<VEC> v = load_vec<VEC>(src + i), wv = load_vec<VEC>(w + i);  // this thread's own writes
    Vec<VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      out.v[j] = __float2bfloat16(__bfloat162float(v.v[j]) * inv_rms * (1.f + __bfloat162float(wv.v[j])));
    }
    store_vec<VEC>(y + t * ldy + i, out);
    if constexpr (kFp8Out) quantize_group_of_8(out, t, i, H, gridDim.x, codes, scales);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void launch_rms_norm(bf16* residual, const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T,
                     int64_t H, float eps, cudaStream_t stream, const char* op, const Fp8Rows* fp8_out) {
  if (T < 0 || H <= 0 || ldx < H || ldy < H || T > INT32_MAX) {
    throw std::invalid_argument(std::string(op) + ": bad shape T=" + std::to_string(T) + " H=" + std::to_string(H));
  }
  if (T == 0) return;
  auto* r = reinterpret_cast<__nv_bfloat16*>(residual);
  auto* xs = reinterpret_cast<const __nv_bfloat16*>(x);
  auto* ws = reinterpret_cast<const __nv_bfloat16*>(w);
  auto* ys = reinterpret_cast<__nv_bfloat16*>(y);
  const bool vec = H % 8 == 0 && ldx % 8 == 0 && ldy % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(y) &&
                   (residual == nullptr || aligned16(residual));
  if (fp8_out) {
    if (!vec || H % kFp8BlockSize != 0 || !fp8_out->codes || !fp8_out->scales ||
        !cuda_utils::is_aligned(fp8_out->codes, 8)) {
      throw std::invalid_argument(std::string(op) + ": the FP8 output needs H % 128 == 0 (H=" + std::to_string(H) +
                                  "), 16-byte aligned rows with ldx, ldy % 8 == 0 and 8-byte aligned codes");
    }
    rms_norm_kernel<8, true>
        <<<unsigned(T), kRowThreads, 0, stream>>>(r, xs, ldx, ws, ys, ldy, H, eps, fp8_out->codes, fp8_out->scales);
  } else if (vec) {
    rms_norm_kernel<8><<<unsigned(T), kRowThreads, 0, stream>>>(r, xs, ldx, ws, ys, ldy, H, eps);
  } else {
    rms_norm_kernel<1><<<unsigned(T), kRowThreads, 0, stream>>>(r, xs, ldx, ws, ys, ldy, H, eps);
  }
  check_launch(op);
}

// One warp per (token, head).
__global__ void head_rms_norm_kernel(const __nv_bfloat16* x, int64_t ldx, int64_t head_stride_x,
                                     const __nv_bfloat16* w, __nv_bfloat16* y, int64_t ldy, int64_t T,
                                     int64_t num_heads, int64_t head_dim, float eps) {
  const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (item >= T * num_heads) return;
  const int64_t t = item / num_heads, h = item % num_heads;
  const __nv_bfloat16* src = x + t * ldx + h * head_stride_x;
  __nv_bfloat16* dst = y + t * ldy + h * head_dim;
  float sum_sq = 0.f;
  for (int64_t i = lane; i < head_dim; i += 32) {
    const float f = __bfloat162float(src[i]);
    sum_sq += f * f;
  }
  const float inv_rms = rsqrtf(warp_sum(sum_sq) / float(head_dim) + eps);
  for (int64_t i = lane; i < head_dim; i += 32) {
    dst[i] = __float2bfloat16(__bfloat162float(src[i]) * inv_rms * (1.f + __bfloat162float(w[i])));
  }
}

}  // namespace

void rms_norm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t H, float eps,
              cudaStream_t stream, const Fp8Rows* fp8_out) {
  launch_rms_norm(nullptr, x, ldx, w, y, ldy, T, H, eps, stream, "cuda::rms_norm", fp8_out);
}

void add_rms_norm(bf16* residual, const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t H,
                  float eps, cudaStream_t stream, const Fp8Rows* fp8_out) {
  launch_rms_norm(residual, x, ldx, w, y, ldy, T, H, eps, stream, "cuda::add_rms_norm", fp8_out);
}

void head_rms_norm(const bf16* x, int64_t ldx, int64_t head_stride_x, const bf16* w, bf16* y, int64_t ldy,
                   int64_t T, int64_t num_heads, int64_t head_dim, float eps, cudaStream_t stream) {
  if (T < 0 || num_heads <= 0 || head_dim <= 0) {
    throw std::invalid_argument("cuda::head_rms_norm: bad shape T=" + std::to_string(T) +
                                " heads=" + std::to_string(num_heads) + " head_dim=" + std::to_string(head_dim));
  }
  if (T == 0) return;
  const int64_t warps = T * num_heads;
  const int threads = 256;
  head_rms_norm_kernel<<<unsigned((warps * 32 + threads - 1) / threads), threads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), ldx, head_stride_x, reinterpret_cast<const __nv_bfloat16*>(w),
      reinterpret_cast<__nv_bfloat16*>(y), ldy, T, num_heads, head_dim, eps);
  check_launch("cuda::head_rms_norm");
}

}  // namespace ds::kernels::cuda
