#include "kernels/gated_norm.h"

#include <cmath>

#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cpu {

void gated_rms_norm(const float* x, const float* z, int64_t z_stride, const float* weight, int64_t num_tokens,
                    int64_t num_heads, int64_t head_dim, float eps, float* out) {
  check_positive(num_heads, "gated_rms_norm", "num_heads");
  check_positive(head_dim, "gated_rms_norm", "head_dim");
  check_row_stride(z_stride, num_heads * head_dim, "gated_rms_norm", "z");
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      const float* xh = x + (t * num_heads + h) * head_dim;
      const float* zh = z + t * z_stride + h * head_dim;
      float* yh = out + (t * num_heads + h) * head_dim;
      double sum_sq = 0;
      for (int64_t i = 0; i < head_dim; ++i) sum_sq += double(xh[i]) * xh[i];
      const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(head_dim) + double(eps)));
      for (int64_t i = 0; i < head_dim; ++i) {
        const float silu_z = zh[i] / (1.f + std::exp(-zh[i]));
        yh[i] = xh[i] * inv_rms * weight[i] * silu_z;
      }
    }
  }
}

}  // namespace ds::kernels::cpu
