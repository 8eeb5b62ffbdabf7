#include "weights/fp8_blocks.h"

#include <algorithm>
#include <cmath>

#include "weights/dtype.h"

namespace ds::weights::detail {

void quantize_fp8_blocks(const float* src, int64_t batches, int64_t rows, int64_t cols, int block_rows, int block_cols,
                         int64_t row_begin, int64_t row_end, uint8_t* dst, float* scale_inv, bool power_of_two_scales) {
  const int64_t scale_rows = (rows + block_rows - 1) / block_rows, scale_cols = (cols + block_cols - 1) / block_cols;
  const int64_t src_rows = row_end - row_begin;
  for (int64_t b = 0; b < batches; ++b) {
    for (int64_t r0 = row_begin; r0 < row_end; r0 += block_rows) {
      const int64_t r1 = std::min({r0 + block_rows, row_end, rows});
      for (int64_t c0 = 0; c0 < cols; c0 += block_cols) {
        const int64_t c1 = std::min(c0 + block_cols, cols);
        float amax = 0.f;
        for (int64_t r = r0; r < r1; ++r) {
          const float* row = src + (b * src_rows + r - row_begin) * cols;
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(row[c]));
        }
        float scale = amax > 0.f ? amax / kF8E4M3Max : 1.f;
        if (power_of_two_scales) {
          int exponent = 0;
          const float mantissa = std::frexp(scale, &exponent);  // scale = mantissa · 2^exponent, mantissa in [0.5, 1)
          scale = std::ldexp(1.f, mantissa == 0.5f ? exponent - 1 : exponent);
        }
        scale_inv[(b * scale_rows + r0 / block_rows) * scale_cols + c0 / block_cols] = scale;
        for (int64_t r = r0; r < r1; ++r) {
          const float* row = src + (b * src_rows + r - row_begin) * cols;
          uint8_t* out = dst + (b * rows + r) * cols;
          for (int64_t c = c0; c < c1; ++c) out[c] = float_to_f8e4m3(row[c] / scale);
        }
      }
    }
  }
}

}  // namespace ds::weights::detail
