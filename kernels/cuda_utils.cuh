// Small device helpers shared by the CUDA kernels (.cu files only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/common.h"

namespace ds::kernels::cuda_utils {

// Our storage type and CUDA's are bit-identical (kernels/common.h).
inline const __nv_bfloat16* as_nv(const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
inline __nv_bfloat16* as_nv(bf16* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

// Throws std::runtime_error naming `op` if the last launch failed (bad configuration, etc.).
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": kernel launch failed: " + cudaGetErrorString(err));
}

// Number of SMs of the calling thread's current device; throws std::runtime_error naming `op`.
inline int current_device_sm_count(const char* op) {
  int device = 0, sms = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": cudaGetDevice: " + cudaGetErrorString(err));
  }
  if (const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": SM count: " + cudaGetErrorString(err));
  }
  return sms;
}

// Lets `Kernel` use `bytes` of dynamic shared memory (beyond the default 48 KB) on the calling
// thread's current device. The opt-in belongs to the device it is made on, so it is remembered per
// device: made once per process, launches from a thread later on another GPU failed with "invalid
// argument".
template <auto Kernel>
void allow_shared_memory(size_t bytes, const char* op) {
  static std::array<std::atomic<size_t>, 64> allowed{};  // bytes allowed so far, per device
  int device = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": cudaGetDevice: " + cudaGetErrorString(err));
  }
  const bool tracked = device < int(allowed.size());
  if (tracked && allowed[device].load(std::memory_order_acquire) >= bytes) return;
  if (const cudaError_t err = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
      err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": cannot allow " + std::to_string(bytes) +
                             " bytes of shared memory: " + cudaGetErrorString(err));
  }
  if (tracked) allowed[device].store(bytes, std::memory_order_release);
}

// Programmatic dependent launch (sm_90; on older architectures both calls compile to nothing and
// launches serialize as usual). A kernel started by launch_programmatic may begin while the kernel
// before it in the stream is still running, so it can stream what no earlier kernel writes
// (weights and FP8 weight scales: a kernel that rewrote them on the device, e.g. a requantization,
// would have to be followed by a normal launch) meanwhile; it must call wait_for_previous_grids()
// before it reads or writes anything else (all earlier grids have then completed and their writes are visible). Without
// allow_dependent_launch() in the kernel before, it starts as that kernel's blocks exit; with it,
// once every block of that kernel has made the call. For a normally launched successor
// allow_dependent_launch() does nothing.
__device__ __forceinline__ void wait_for_previous_grids() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_launch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
}

template <typename... KernelParams, typename... Args>
void launch_programmatic(void (*kernel)(KernelParams...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                         const char* op, Args&&... args) {
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  if (const cudaError_t err = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...); err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": kernel launch failed: " + cudaGetErrorString(err));
  }
}

inline bool is_aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Loads/stores N consecutive elements converting to/from fp32, in one access of N·sizeof(T) bytes
// (4, 8 or 16, aligned to that size); store_vec also takes several whole 16-byte pieces.
template <int N, typename T>
__device__ __forceinline__ void load_vec(const T* src, float (&dst)[N]) {
  static_assert((N * sizeof(T)) % 4 == 0 && N * sizeof(T) <= 16, "vector of 4..16 bytes");
  constexpr int kWords = int(N * sizeof(T) / 4);
  struct alignas(N * sizeof(T)) Pack {
    uint32_t w[kWords];
  };
  const Pack pack = *reinterpret_cast<const Pack*>(src);
  const T* elems = reinterpret_cast<const T*>(pack.w);
#pragma unroll
  for (int i = 0; i < N; ++i) dst[i] = to_float(elems[i]);
}

template <int N, typename T>
__device__ __forceinline__ void store_vec(T* dst, const float (&src)[N]) {
  if constexpr (N * sizeof(T) > 16) {  // several 16-byte pieces
    constexpr int kPiece = int(16 / sizeof(T));
    static_assert(N % kPiece == 0, "whole 16-byte pieces");
#pragma unroll
    for (int p = 0; p < N / kPiece; ++p)
      store_vec<kPiece>(dst + p * kPiece, reinterpret_cast<const float(&)[kPiece]>(src[p * kPiece]));
  } else {
    static_assert((N * sizeof(T)) % 4 == 0, "vector of 4..16 bytes");
    constexpr int kWords = int(N * sizeof(T) / 4);
    struct alignas(N * sizeof(T)) Pack {
      uint32_t w[kWords];
    };
    Pack pack;
    T* elems = reinterpret_cast<T*>(pack.w);
#pragma unroll
    for (int i = 0; i < N; ++i) elems[i] = from_float<T>(src[i]);
    *reinterpret_cast<Pack*>(dst) = pack;
  }
}

// load_vec when `vector_ok` (the caller checked alignment of base pointer and row stride), else
// element by element: row-strided views of odd widths (e.g. a merged projection row of 2060
// columns) still work, at a lower speed.
template <int N, typename T>
__device__ __forceinline__ void load_vec_or_scalar(const T* src, float (&dst)[N], bool vector_ok) {
  if (vector_ok) {
    load_vec<N>(src, dst);
    return;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) dst[i] = to_float(src[i]);
}

// Whether rows of `stride` elements starting at `base` can be read in vectors of `bytes` bytes.
template <typename T>
inline bool rows_vector_aligned(const T* base, int64_t stride, size_t bytes) {
  return is_aligned(base, bytes) && (size_t(stride) * sizeof(T)) % bytes == 0;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

// Index of the sequence holding packed token t: the s with cu_seqlens[s] <= t < cu_seqlens[s+1]
// (the last such s when empty sequences share the boundary). t must be < cu_seqlens[num_seqs].
__device__ __forceinline__ int64_t find_sequence(const int32_t* cu_seqlens, int64_t num_seqs, int64_t t) {
  int64_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu_seqlens[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

inline unsigned grid_dim(int64_t n, int64_t per_block) { return unsigned((n + per_block - 1) / per_block); }

}  // namespace ds::kernels::cuda_utils
