#include "kernels/gdn_conv.h"

#include <cmath>

#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cpu {

namespace {

float silu(float x) { return x / (1.f + std::exp(-x)); }

// One channel of one sequence: `window` holds the 3 inputs before the current token (oldest
// first); returns the activated output and shifts `x_new` into the window.
float conv_step(float window[kGdnConvStateLen], const float* w, float x_new) {
  float acc = w[kGdnConvStateLen] * x_new;
  for (int64_t j = 0; j < kGdnConvStateLen; ++j) acc += w[j] * window[j];
  for (int64_t j = 0; j + 1 < kGdnConvStateLen; ++j) window[j] = window[j + 1];
  window[kGdnConvStateLen - 1] = x_new;
  return silu(acc);
}

}  // namespace

void gdn_conv_prefill(const float* x, int64_t x_stride, const float* weight, int64_t channels, float* conv_state_pool,
                      const GdnVarlenBatch& batch, float* out) {
  check_positive(channels, "gdn_conv_prefill", "channels");
  check_row_stride(x_stride, channels, "gdn_conv_prefill", "x");
  check_host_varlen_batch(batch, "gdn_conv_prefill");
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const bool from_state = batch.has_initial_state == nullptr || batch.has_initial_state[s] != 0;
    float* state = conv_state_pool + batch.slots[s] * channels * kGdnConvStateLen;
    for (int64_t c = 0; c < channels; ++c) {
      float window[kGdnConvStateLen] = {};
      float* channel_state = state + c * kGdnConvStateLen;
      if (from_state) {
        for (int64_t j = 0; j < kGdnConvStateLen; ++j) window[j] = channel_state[j];
      }
      for (int64_t t = batch.cu_seqlens[s]; t < batch.cu_seqlens[s + 1]; ++t) {
        out[t * channels + c] = conv_step(window, weight + c * kGdnConvKernel, x[t * x_stride + c]);
      }
      for (int64_t j = 0; j < kGdnConvStateLen; ++j) channel_state[j] = window[j];
    }
  }
}

void gdn_conv_decode(const float* x, int64_t x_stride, const float* weight, int64_t channels, float* conv_state_pool,
                     const int32_t* slots, int64_t batch_size, float* out) {
  check_positive(channels, "gdn_conv_decode", "channels");
  check_row_stride(x_stride, channels, "gdn_conv_decode", "x");
  for (int64_t i = 0; i < batch_size; ++i) {
    float* state = conv_state_pool + slots[i] * channels * kGdnConvStateLen;
    for (int64_t c = 0; c < channels; ++c) {
      out[i * channels + c] = conv_step(state + c * kGdnConvStateLen, weight + c * kGdnConvKernel, x[i * x_stride + c]);
    }
  }
}

}  // namespace ds::kernels::cpu
