// Internal to gdn_projection.{cpp,cu}: where key-head group g's parts sit in the split kernel's
// two input rows, for either layout. Shared so that the CPU reference and the CUDA kernel index
// the layouts the same way (the unit test checks this against direct indexing).
#pragma once

#include <cstdint>

#include "kernels/gdn_projection.h"

namespace ds::kernels {

// Column offsets, in elements from the row start, of group g's q (dk), k (dk), v (r·dv) and z (r·dv)
// in the qkvz row and of its b (r) and a (r) in the ba row.
struct QkvzGroupOffsets {
  int64_t q, k, v, z, b, a;
};

#if defined(__CUDACC__)
__host__ __device__
#endif
    inline QkvzGroupOffsets
    qkvz_group_offsets(QkvzLayout layout, const GdnDims& d, int64_t g) {
  const int64_t r = d.num_v_heads / d.num_k_heads;
  const int64_t K = d.num_k_heads * d.head_k_dim, V = d.num_v_heads * d.head_v_dim;
  if (layout == QkvzLayout::kContiguous) {
    return {g * d.head_k_dim,
            K + g * d.head_k_dim,
            2 * K + g * r * d.head_v_dim,
            2 * K + V + g * r * d.head_v_dim,
            g * r,
            d.num_v_heads + g * r};
  }
  const int64_t group = 2 * d.head_k_dim + 2 * r * d.head_v_dim;
  const int64_t base = g * group;
  return {base,      base + d.head_k_dim, base + 2 * d.head_k_dim, base + 2 * d.head_k_dim + r * d.head_v_dim,
          g * 2 * r, g * 2 * r + r};
}

// Throws std::invalid_argument for bad dims, negative T or strides shorter than the rows.
void validate_split_args(int64_t qkvz_stride, int64_t ba_stride, int64_t num_tokens, const GdnDims& dims);

}  // namespace ds::kernels
