#include "kernels/activation.h"

#include <cmath>
#include <cstring>

namespace ds::kernels::cpu {

void silu_and_mul(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t T, int64_t I) {
  for (int64_t t = 0; t < T; ++t) {
    const float* gate = x + t * ldx;
    const float* up = gate + I;
    for (int64_t i = 0; i < I; ++i) y[t * ldy + i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
  }
}

void embedding_lookup(const int32_t* ids, int64_t T, const float* table, int64_t vocab_start, int64_t rows,
                      int64_t H, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = int64_t(ids[t]) - vocab_start;
    if (row >= 0 && row < rows) {
      std::memcpy(out + t * H, table + row * H, sizeof(float) * size_t(H));
    } else {
      std::memset(out + t * H, 0, sizeof(float) * size_t(H));
    }
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace ds::kernels::cpu
