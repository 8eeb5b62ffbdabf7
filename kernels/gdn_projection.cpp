#include "kernels/gdn_projection.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/gdn_projection_detail.h"

namespace ds::kernels {

void validate_split_args(int64_t qkvz_stride, int64_t ba_stride, int64_t num_tokens, const GdnDims& dims) {
  validate_gdn_dims(dims, "fused_qkvzba_split_reshape_cat");
  const int64_t qkvz_width = dims.conv_dim() + dims.value_dim();
  if (num_tokens < 0) throw std::invalid_argument("fused_qkvzba_split_reshape_cat: num_tokens is negative");
  if (qkvz_stride < qkvz_width) {
    throw std::invalid_argument("fused_qkvzba_split_reshape_cat: qkvz_stride " + std::to_string(qkvz_stride) +
                                " is smaller than the qkvz row (2K+2V = " + std::to_string(qkvz_width) + ")");
  }
  if (ba_stride < 2 * dims.num_v_heads) {
    throw std::invalid_argument("fused_qkvzba_split_reshape_cat: ba_stride " + std::to_string(ba_stride) +
                                " is smaller than the ba row (2Hv = " + std::to_string(2 * dims.num_v_heads) + ")");
  }
}

namespace cpu {

void fused_qkvzba_split_reshape_cat(const float* qkvz, int64_t qkvz_stride, const float* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, float* mixed_qkv,
                                    float* z, float* b, float* a) {
  validate_split_args(qkvz_stride, ba_stride, num_tokens, dims);
  const int64_t K = dims.key_dim(), V = dims.value_dim(), C = dims.conv_dim(), Hv = dims.num_v_heads;
  const int64_t dk = dims.head_k_dim, dv = dims.head_v_dim, r = dims.ratio();
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* src = qkvz + t * qkvz_stride;
    const float* src_ba = ba + t * ba_stride;
    float* qkv_row = mixed_qkv + t * C;
    float* z_row = z + t * V;
    for (int64_t g = 0; g < dims.num_k_heads; ++g) {
      const QkvzGroupOffsets off = qkvz_group_offsets(layout, dims, g);
      std::memcpy(qkv_row + g * dk, src + off.q, dk * sizeof(float));
      std::memcpy(qkv_row + K + g * dk, src + off.k, dk * sizeof(float));
      std::memcpy(qkv_row + 2 * K + g * r * dv, src + off.v, r * dv * sizeof(float));
      std::memcpy(z_row + g * r * dv, src + off.z, r * dv * sizeof(float));
      for (int64_t j = 0; j < r; ++j) {
        b[t * Hv + g * r + j] = src_ba[off.b + j];
        a[t * Hv + g * r + j] = src_ba[off.a + j];
      }
    }
  }
}

}  // namespace cpu

}  // namespace ds::kernels
