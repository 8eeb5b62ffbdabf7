#include "kernels/cuda_utils.cuh"
#include "kernels/gdn_projection.h"
#include "kernels/gdn_projection_detail.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;

// Geometry the kernel needs, in 32-bit column units (a row is far below 2^31 columns; row offsets
// are 64-bit).
struct SplitGeometry {
  int32_t key_dim, value_dim, group_v, ratio, num_v_heads;  // group_v = r·dv
  int32_t head_k_dim;
  QkvzLayout layout;
  GdnDims dims;
};

// Source column, in the qkvz row, of output column `col` of the row [mixed_qkv (2K+V) | z (V)].
__device__ __forceinline__ int64_t source_column(const SplitGeometry& g, int32_t col) {
  if (col < 2 * g.key_dim) {
    const int32_t part = col < g.key_dim ? 0 : 1;
    const int32_t c = col - part * g.key_dim;
    const QkvzGroupOffsets off = qkvz_group_offsets(g.layout, g.dims, c / g.head_k_dim);
    return (part == 0 ? off.q : off.k) + c % g.head_k_dim;
  }
  const int32_t part = col < 2 * g.key_dim + g.value_dim ? 0 : 1;
  const int32_t c = col - 2 * g.key_dim - part * g.value_dim;
  const QkvzGroupOffsets off = qkvz_group_offsets(g.layout, g.dims, c / g.group_v);
  return (part == 0 ? off.v : off.z) + c % g.group_v;
}

// Rows per block: each thread moves the same unit of kRows consecutive rows, issuing all loads
// before the stores so that several 16-byte loads per thread are in flight.
constexpr int kRows = 4;

// blockIdx.x = group of kRows tokens; blockIdx.y·blockDim.x + threadIdx.x = unit of the output
// row: first the (2K+2V)/VEC vectors of [mixed_qkv | z], then 2Hv scalars of [b | a].
template <int VEC, typename T>
__global__ void split_kernel(const T* __restrict__ qkvz, int64_t qkvz_stride, const T* __restrict__ ba,
                             int64_t ba_stride, int64_t num_tokens, SplitGeometry g, T* __restrict__ mixed_qkv,
                             T* __restrict__ z, T* __restrict__ b, T* __restrict__ a) {
  const int64_t t0 = int64_t(blockIdx.x) * kRows;
  const int rows = int(num_tokens - t0 < kRows ? num_tokens - t0 : kRows);
  const int32_t unit = blockIdx.y * blockDim.x + threadIdx.x;
  const int32_t conv_dim = 2 * g.key_dim + g.value_dim;
  const int32_t num_vectors = (conv_dim + g.value_dim) / VEC;
  if (unit < num_vectors) {
    const int32_t col = unit * VEC;
    struct alignas(VEC * sizeof(T)) Pack {
      T e[VEC];
    };
    const T* src = qkvz + t0 * qkvz_stride + source_column(g, col);
    T* dst = col < conv_dim ? mixed_qkv + t0 * conv_dim + col : z + t0 * g.value_dim + (col - conv_dim);
    const int64_t dst_stride = col < conv_dim ? conv_dim : g.value_dim;
    Pack v[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) v[r] = *reinterpret_cast<const Pack*>(src + r * qkvz_stride);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) *reinterpret_cast<Pack*>(dst + r * dst_stride) = v[r];
    }
    return;
  }
  const int32_t scalar = unit - num_vectors;
  if (scalar >= 2 * g.num_v_heads) return;
  const int32_t h = scalar % g.num_v_heads;
  const QkvzGroupOffsets off = qkvz_group_offsets(g.layout, g.dims, h / g.ratio);
  const int64_t src_col = (scalar < g.num_v_heads ? off.b : off.a) + h % g.ratio;
  T* dst = scalar < g.num_v_heads ? b : a;
  for (int r = 0; r < rows; ++r) dst[(t0 + r) * g.num_v_heads + h] = ba[(t0 + r) * ba_stride + src_col];
}

template <int VEC, typename T>
void launch_split(const T* qkvz, int64_t qkvz_stride, const T* ba, int64_t ba_stride, int64_t num_tokens,
                  const SplitGeometry& g, T* mixed_qkv, T* z, T* b, T* a, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t units = (2 * g.key_dim + 2 * g.value_dim) / VEC + 2 * g.num_v_heads;
  const dim3 grid(cuda_utils::grid_dim(num_tokens, kRows), cuda_utils::grid_dim(units, kThreads));
  split_kernel<VEC><<<grid, kThreads, 0, stream>>>(qkvz, qkvz_stride, ba, ba_stride, num_tokens, g, mixed_qkv, z, b, a);
  cuda_utils::check_launch("fused_qkvzba_split_reshape_cat");
}

// 16-byte vectors when every segment, stride and pointer allows them, else single elements.
template <typename T>
void split(const T* qkvz, int64_t qkvz_stride, const T* ba, int64_t ba_stride, int64_t num_tokens, const GdnDims& dims,
           QkvzLayout layout, T* mixed_qkv, T* z, T* b, T* a, cudaStream_t stream) {
  validate_split_args(qkvz_stride, ba_stride, num_tokens, dims);
  if (num_tokens == 0) return;
  if (num_tokens > int64_t(INT32_MAX)) throw std::invalid_argument("fused_qkvzba_split_reshape_cat: too many tokens");
  const SplitGeometry g{int32_t(dims.key_dim()),
                        int32_t(dims.value_dim()),
                        int32_t(dims.ratio() * dims.head_v_dim),
                        int32_t(dims.ratio()),
                        int32_t(dims.num_v_heads),
                        int32_t(dims.head_k_dim),
                        layout,
                        dims};
  constexpr int kVec = int(16 / sizeof(T));
  const bool vectorizable = dims.head_k_dim % kVec == 0 && dims.head_v_dim % kVec == 0 && qkvz_stride % kVec == 0 &&
                            cuda_utils::is_aligned(qkvz, 16) && cuda_utils::is_aligned(mixed_qkv, 16) &&
                            cuda_utils::is_aligned(z, 16);
  if (vectorizable) {
    launch_split<kVec>(qkvz, qkvz_stride, ba, ba_stride, num_tokens, g, mixed_qkv, z, b, a, stream);
  } else {
    launch_split<1>(qkvz, qkvz_stride, ba, ba_stride, num_tokens, g, mixed_qkv, z, b, a, stream);
  }
}

}  // namespace

void fused_qkvzba_split_reshape_cat(const bf16* qkvz, int64_t qkvz_stride, const bf16* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, bf16* mixed_qkv,
                                    bf16* z, bf16* b, bf16* a, cudaStream_t stream) {
  split(as_nv(qkvz), qkvz_stride, as_nv(ba), ba_stride, num_tokens, dims, layout, as_nv(mixed_qkv), as_nv(z), as_nv(b),
        as_nv(a), stream);
}

void fused_qkvzba_split_reshape_cat(const float* qkvz, int64_t qkvz_stride, const float* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, float* mixed_qkv,
                                    float* z, float* b, float* a, cudaStream_t stream) {
  split(qkvz, qkvz_stride, ba, ba_stride, num_tokens, dims, layout, mixed_qkv, z, b, a, stream);
}

}  // namespace ds::kernels::cuda
