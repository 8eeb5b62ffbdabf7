#include "kernels/rope.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/norm.h"

namespace ds::kernels {

void validate_rope(const RopeParams& rope) {
  if (rope.head_dim <= 0 || rope.rotary_dim <= 0 || rope.rotary_dim > rope.head_dim || rope.rotary_dim % 2 != 0 ||
      !(rope.theta > 0.f)) {
    throw std::invalid_argument("RopeParams: need 0 < rotary_dim <= head_dim, rotary_dim even, theta > 0 (head_dim=" +
                                std::to_string(rope.head_dim) + ", rotary_dim=" + std::to_string(rope.rotary_dim) +
                                ", theta=" + std::to_string(rope.theta) + ")");
  }
}

namespace cpu {

namespace {

// Rotates one head in place. The angle is computed exactly like the CUDA kernel: inv_freq rounded
// to fp32 from a double pow, fp32 product with the position, precise sin/cos of that fp32 angle.
void rope_head(float* x, int32_t position, const RopeParams& rope) {
  const int64_t half = rope.rotary_dim / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float inv_freq = float(std::pow(double(rope.theta), -double(2 * j) / double(rope.rotary_dim)));
    const float angle = float(position) * inv_freq;
    const float c = std::cos(angle), s = std::sin(angle);
    const float a = x[j], b = x[j + half];
    x[j] = a * c - b * s;
    x[j + half] = b * c + a * s;
  }
}

}  // namespace

void rope(float* x, int64_t ldx, int64_t head_stride, int64_t T, int64_t num_heads, const int32_t* positions,
          const RopeParams& params) {
  validate_rope(params);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) rope_head(x + t * ldx + h * head_stride, positions[t], params);
  }
}

void qk_norm_rope(const float* qg, int64_t ldqg, const float* k, int64_t ldk, const float* q_norm_w,
                  const float* k_norm_w, float eps, const int32_t* positions, int64_t T, int64_t num_q_heads,
                  int64_t num_kv_heads, const RopeParams& params, float* q_out, float* k_out) {
  validate_rope(params);
  const int64_t D = params.head_dim;
  head_rms_norm(qg, ldqg, 2 * D, q_norm_w, q_out, num_q_heads * D, T, num_q_heads, D, eps);
  head_rms_norm(k, ldk, D, k_norm_w, k_out, num_kv_heads * D, T, num_kv_heads, D, eps);
  rope(q_out, num_q_heads * D, D, T, num_q_heads, positions, params);
  rope(k_out, num_kv_heads * D, D, T, num_kv_heads, positions, params);
}

}  // namespace cpu

}  // namespace ds::kernels
