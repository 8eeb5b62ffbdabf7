#include "kernels/norm.h"

#include <cmath>

namespace ds::kernels::cpu {

namespace {

// y[i] = x[i] · rsqrt(mean(x²) + eps) · (1 + w[i]), accumulating the mean in double so the
// reference is not the noisier side of a comparison.
void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) sum_sq += double(x[i]) * x[i];
  const float inv_rms = 1.f / std::sqrt(float(sum_sq / double(n)) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv_rms * (1.f + w[i]);
}

}  // namespace

void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T, int64_t H, float eps) {
  for (int64_t t = 0; t < T; ++t) rms_norm_row(x + t * ldx, w, y + t * ldy, H, eps);
}

void add_rms_norm(float* residual, const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T,
                  int64_t H, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    float* r = residual + t * H;
    for (int64_t i = 0; i < H; ++i) r[i] += x[t * ldx + i];
    rms_norm_row(r, w, y + t * ldy, H, eps);
  }
}

void head_rms_norm(const float* x, int64_t ldx, int64_t head_stride_x, const float* w, float* y, int64_t ldy,
                   int64_t T, int64_t num_heads, int64_t head_dim, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      rms_norm_row(x + t * ldx + h * head_stride_x, w, y + t * ldy + h * head_dim, head_dim, eps);
    }
  }
}

}  // namespace ds::kernels::cpu
