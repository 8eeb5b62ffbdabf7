#include "kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
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

uint8_t float_to_fp8_e4m3(float v) {
  if (std::isnan(v)) return 0x7f;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float a = std::fabs(v);
  if (a >= kFp8E4M3Max) return sign | 0x7e;  // satfinite
  // Quantum of a's binade (2^-9 below the smallest normal 2^-6); a / quantum is exact, and
  // nearbyint rounds it to nearest even like the hardware.
  int e = 0;
  std::frexp(a, &e);  // a = f·2^e, f in [0.5, 1): the binade is [2^(e-1), 2^e)
  const int exponent = a < std::ldexp(1.f, -6) ? -6 : e - 1;
  int m = int(std::nearbyint(std::ldexp(a, 3 - exponent)));  // 8..16 for normals, 0..8 subnormal
  if (exponent == -6 && m < 8) return sign | uint8_t(m);  // subnormal (m == 8 is 2^-6, below)
  int biased = exponent + 7;
  if (m == 16) {  // rounded up into the next binade
    m = 8;
    ++biased;
  }
  return sign | uint8_t(biased << 3) | uint8_t(m - 8);
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

void quantize_fp8_per_token_group(const float* x, int64_t ldx, int64_t T, int64_t K, uint8_t* xq, float* scales) {
  if (T < 0 || K <= 0 || K % kFp8BlockSize != 0 || ldx < K) {
    throw std::invalid_argument("cpu::quantize_fp8_per_token_group: bad shape T=" + std::to_string(T) +
                                " K=" + std::to_string(K) + " ldx=" + std::to_string(ldx) +
                                " (K must be a multiple of 128)");
  }
  const int64_t groups = K / kFp8BlockSize;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* in = x + t * ldx + g * kFp8BlockSize;
      float amax = 0.f;
      for (int64_t i = 0; i < kFp8BlockSize; ++i) amax = std::max(amax, std::fabs(in[i]));
      // An all-zero group gets scale 1 (any scale represents it; this one avoids 0/0).
      const float scale = amax > 0.f ? amax / kFp8E4M3Max : 1.f;
      scales[g * T + t] = scale;
      for (int64_t i = 0; i < kFp8BlockSize; ++i) xq[t * K + g * kFp8BlockSize + i] = float_to_fp8_e4m3(in[i] / scale);
    }
  }
}

void gemm_fp8_w8a8(const float* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, float* y,
                   int64_t ldy, int64_t T, int64_t N, int64_t K, float beta) {
  check_gemm_shape("cpu::gemm_fp8_w8a8", ldx, ldy, T, N, K);
  std::vector<uint8_t> xq(size_t(T) * size_t(K));
  std::vector<float> scales(size_t(T) * size_t(K / kFp8BlockSize));
  quantize_fp8_per_token_group(x, ldx, T, K, xq.data(), scales.data());
  std::vector<float> xd(xq.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {
      xd[size_t(t * K + k)] = fp8_e4m3_to_float(xq[size_t(t * K + k)]) * scales[size_t((k / kFp8BlockSize) * T + t)];
    }
  }
  gemm_fp8(xd.data(), K, w_fp8, weight_scale_inv, y, ldy, T, N, K, beta);
}

}  // namespace cpu

namespace cuda {

const char* to_string(Fp8Numerics numerics) {
  switch (numerics) {
    case Fp8Numerics::kW8A8: return "w8a8";
    case Fp8Numerics::kW8A16: return "w8a16";
    case Fp8Numerics::kFastest: return "fastest";
  }
  return "?";
}

Fp8Numerics parse_fp8_numerics(const std::string& name) {
  for (const Fp8Numerics n : {Fp8Numerics::kW8A8, Fp8Numerics::kW8A16, Fp8Numerics::kFastest}) {
    if (name == to_string(n)) return n;
  }
  throw std::invalid_argument("unknown FP8 numerics \"" + name + "\" (w8a8, w8a16 or fastest)");
}

}  // namespace cuda

}  // namespace ds::kernels
