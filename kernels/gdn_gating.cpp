#include "kernels/gdn_gating.h"

#include <cmath>

#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cpu {

void gdn_gating(const float* a, int64_t a_stride, const float* b, int64_t b_stride, const float* A_log,
                const float* dt_bias, int64_t num_tokens, int64_t num_v_heads, float* g, float* beta) {
  check_positive(num_v_heads, "gdn_gating", "num_v_heads");
  check_row_stride(a_stride, num_v_heads, "gdn_gating", "a");
  check_row_stride(b_stride, num_v_heads, "gdn_gating", "b");
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < num_v_heads; ++h) {
      const double x = double(a[t * a_stride + h]) + double(dt_bias[h]);
      const double softplus = x > 20.0 ? x : std::log1p(std::exp(x));
      g[t * num_v_heads + h] = float(-std::exp(double(A_log[h])) * softplus);
      beta[t * num_v_heads + h] = float(1.0 / (1.0 + std::exp(-double(b[t * b_stride + h]))));
    }
  }
}

}  // namespace ds::kernels::cpu
