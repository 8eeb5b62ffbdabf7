#include "kernels/gemm.h"

#include <cblas.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace ds::kernels {

float fp8_e4m3_to_float(uint8_t v) {
  const int sign = v >> 7;
  const int exponent = (v >> 3) & 0xf;
  const int mantissa = v & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
  float magnitude = exponent == 0 ? std::ldexp(float(mantissa), -9)  // subnormal: m/8 · 2^-6
                                  : std::ldexp(1.f + float(mantissa) / 8.f, exponent - 7);
  return sign ? -magnitude : magnitude;
}

namespace cpu {

namespace {

void check_gemm_shape(const char* op, int64_t ldx, int64_t ldy, int64_t T, int64_t N, int64_t K) {
  if (T < 0 || N <= 0 || K <= 0 || ldx < K || ldy < N) {
    throw std::invalid_argument(std::string(op) + ": bad shape T=" + std::to_string(T) + " N=" + std::to_string(N) +
                                " K=" + std::to_string(K) + " ldx=" + std::to_string(ldx) +
                                " ldy=" + std::to_string(ldy));
  }
}

}  // namespace

void gemm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
          float beta) {
  check_gemm_shape("cpu::gemm", ldx, ldy, T, N, K);
  if (T == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(N), int(K), 1.f, x, int(ldx), w, int(K), beta, y,
              int(ldy));
}

void dequantize_fp8_weight(const uint8_t* w_fp8, const float* weight_scale_inv, int64_t N, int64_t K, float* w) {
  const int64_t scale_cols = (K + kFp8BlockSize - 1) / kFp8BlockSize;
  float table[256];
  for (int i = 0; i < 256; ++i) table[i] = fp8_e4m3_to_float(uint8_t(i));
  for (int64_t n = 0; n < N; ++n) {
    const float* scale_row = weight_scale_inv + (n / kFp8BlockSize) * scale_cols;
    for (int64_t k = 0; k < K; ++k) w[n * K + k] = table[w_fp8[n * K + k]] * scale_row[k / kFp8BlockSize];
  }
}

void gemm_fp8(const float* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, float* y,
              int64_t ldy, int64_t T, int64_t N, int64_t K, float beta) {
  check_gemm_shape("cpu::gemm_fp8", ldx, ldy, T, N, K);
  std::vector<float> w(size_t(N) * size_t(K));
  dequantize_fp8_weight(w_fp8, weight_scale_inv, N, K, w.data());
  gemm(x, ldx, w.data(), y, ldy, T, N, K, beta);
}

}  // namespace cpu

}  // namespace ds::kernels
