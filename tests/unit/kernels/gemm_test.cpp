#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "tests/unit/kernels/random_data.h"

namespace ds::kernels {
namespace {

using test::random_vector;

TEST(CpuGemm, HandCheckedTwoByTwo) {
  const float x[] = {1, 2, 3, 4};    // [2, 2]
  const float w[] = {5, 6, 7, 8};    // [N=2, K=2]
  float y[4];
  cpu::gemm(x, 2, w, y, 2, 2, 2, 2);
  EXPECT_FLOAT_EQ(y[0], 1 * 5 + 2 * 6);
  EXPECT_FLOAT_EQ(y[1], 1 * 7 + 2 * 8);
  EXPECT_FLOAT_EQ(y[2], 3 * 5 + 4 * 6);
  EXPECT_FLOAT_EQ(y[3], 3 * 7 + 4 * 8);
}

TEST(CpuGemm, StridedViewsAndBetaMatchNaiveLoop) {
  const int64_t T = 5, N = 7, K = 9, ldx = 12, ldy = 10;
  auto x = random_vector(size_t(T * ldx), 1), w = random_vector(size_t(N * K), 2), y = random_vector(size_t(T * ldy), 3);
  auto expected = y;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(x[size_t(t * ldx + k)]) * w[size_t(n * K + k)];
      expected[size_t(t * ldy + n)] = float(acc + 0.5 * y[size_t(t * ldy + n)]);
    }
  }
  cpu::gemm(x.data(), ldx, w.data(), y.data(), ldy, T, N, K, 0.5f);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], expected[i], 1e-5) << i;  // padding columns untouched too
}

TEST(CpuGemm, RejectsBadShapes) {
  float buf[16] = {};
  EXPECT_THROW(cpu::gemm(buf, 1, buf, buf, 2, 2, 2, 2), std::invalid_argument);  // ldx < K
}

TEST(Fp8, E4M3DecodesKnownValues) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.f);
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.f);
  EXPECT_EQ(fp8_e4m3_to_float(0xb8), -1.f);
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.f);
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.f, -9));
  EXPECT_EQ(fp8_e4m3_to_float(0x3c), 1.5f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7f)));
}

TEST(CpuGemm, Fp8BlockScalesApplyPerBlock) {
  // N and K not multiples of 128, so partial blocks are exercised.
  const int64_t T = 3, N = 130, K = 200;
  std::mt19937 rng(4);
  std::vector<uint8_t> w(size_t(N * K));
  for (auto& b : w) b = uint8_t(rng() % 256) & 0xf7;  // avoid 0x7f/0xff NaNs (bit 3 cleared)
  std::vector<float> scales = {0.5f, 2.f, 0.25f, 4.f};  // [2, 2]
  auto x = random_vector(size_t(T * K), 5);
  std::vector<float> y(size_t(T * N));
  cpu::gemm_fp8(x.data(), K, w.data(), scales.data(), y.data(), N, T, N, K);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        acc += double(x[size_t(t * K + k)]) * fp8_e4m3_to_float(w[size_t(n * K + k)]) *
               scales[size_t((n / 128) * 2 + k / 128)];
      }
      EXPECT_NEAR(y[size_t(t * N + n)], acc, 1e-3 * std::max(1.0, std::fabs(acc)));
    }
  }
}

TEST(Fp8, E4M3EncodeInvertsDecodeForEveryCode) {
  // Every finite code decodes to a value that encodes back to it (so encode hits each binade and
  // the subnormals right); -0 keeps its sign.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    EXPECT_EQ(float_to_fp8_e4m3(fp8_e4m3_to_float(uint8_t(c))), c) << c;
  }
}

TEST(Fp8, E4M3EncodeRoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(float_to_fp8_e4m3(1.0625f), 0x38);  // halfway 1 | 1.125: even mantissa 0
  EXPECT_EQ(float_to_fp8_e4m3(1.1875f), 0x3a);  // halfway 1.125 | 1.25: even mantissa 2
  EXPECT_EQ(float_to_fp8_e4m3(1.07f), 0x39);
  EXPECT_EQ(float_to_fp8_e4m3(15.5f), 0x58);    // rounds up into the next binade (16)
  EXPECT_EQ(float_to_fp8_e4m3(std::ldexp(3.f, -10)), 0x02);  // 1.5 subnormal quanta -> 2 (even)
  EXPECT_EQ(float_to_fp8_e4m3(std::ldexp(1.f, -10)), 0x00);  // half a quantum -> 0 (even)
  EXPECT_EQ(float_to_fp8_e4m3(460.f), 0x7e);    // above 448 saturates instead of NaN
  EXPECT_EQ(float_to_fp8_e4m3(-1e9f), 0xfe);
  EXPECT_EQ(float_to_fp8_e4m3(std::nanf("")), 0x7f);
}

TEST(CpuFp8Quant, PerTokenGroupScalesLayoutAndRoundTrip) {
  // Three tokens, three 128-groups, a strided view; token 1's middle group is all zeros.
  const int64_t T = 3, K = 384, ldx = 400, G = K / kFp8BlockSize;
  auto x = random_vector(size_t(T * ldx), 6);
  for (int64_t k = 128; k < 256; ++k) x[size_t(1 * ldx + k)] = 0.f;
  x[size_t(2 * ldx + 300)] = -37.f;  // token 2, group 2: amax from a negative outlier
  std::vector<uint8_t> xq(size_t(T * K));
  std::vector<float> scales(size_t(G * T));
  cpu::quantize_fp8_per_token_group(x.data(), ldx, T, K, xq.data(), scales.data());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g = 0; g < G; ++g) {
      float amax = 0.f;
      for (int64_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[size_t(t * ldx + g * 128 + i)]));
      const float scale = scales[size_t(g * T + t)];  // group-major, token fastest (cuBLASLt's order)
      EXPECT_EQ(scale, amax > 0 ? amax / 448.f : 1.f) << t << "," << g;
      for (int64_t i = 0; i < 128; ++i) {
        const float v = x[size_t(t * ldx + g * 128 + i)];
        const float back = fp8_e4m3_to_float(xq[size_t(t * K + g * 128 + i)]) * scale;
        // Half an E4M3 ulp: 2^-4 relative for normals, 2^-10 · scale in the subnormal range.
        EXPECT_LE(std::fabs(back - v), std::fabs(v) / 16.f + std::ldexp(scale, -10) + 1e-7f) << t << "," << g << "," << i;
      }
    }
  }
  EXPECT_EQ(scales[size_t(1 * T + 1)], 1.f);
  EXPECT_EQ(fp8_e4m3_to_float(xq[size_t(2 * K + 300)]), -448.f);  // the outlier maps to the range end
  EXPECT_THROW(cpu::quantize_fp8_per_token_group(x.data(), ldx, T, 200, xq.data(), scales.data()),
               std::invalid_argument);  // K not a multiple of 128
}

TEST(CpuGemm, Fp8W8A8IsGemmOfTheDequantizedActivations) {
  const int64_t T = 2, N = 130, K = 256;
  std::mt19937 rng(7);
  std::vector<uint8_t> w(size_t(N * K));
  for (auto& b : w) b = uint8_t(rng() % 256) & 0xf7;  // no NaNs
  const std::vector<float> scales = {0.5f, 2.f, 0.25f, 4.f};  // [2, 2]
  auto x = random_vector(size_t(T * K), 8);
  std::vector<uint8_t> xq(size_t(T * K));
  std::vector<float> xs(size_t(T * K / 128));
  cpu::quantize_fp8_per_token_group(x.data(), K, T, K, xq.data(), xs.data());
  std::vector<float> xd(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) xd[size_t(t * K + k)] = fp8_e4m3_to_float(xq[size_t(t * K + k)]) * xs[size_t(k / 128 * T + t)];
  }
  std::vector<float> want(size_t(T * N)), got(size_t(T * N));
  cpu::gemm_fp8(xd.data(), K, w.data(), scales.data(), want.data(), N, T, N, K);
  cpu::gemm_fp8_w8a8(x.data(), K, w.data(), scales.data(), got.data(), N, T, N, K);
  EXPECT_EQ(got, want);
}

// The names serve --fp8-numerics and the worker's Init carry.
TEST(Fp8, NumericsNamesRoundTripAndUnknownOnesAreRefused) {
  for (const char* name : {"w8a8", "w8a16", "fastest"}) {
    EXPECT_STREQ(cuda::to_string(cuda::parse_fp8_numerics(name)), name);
  }
  EXPECT_EQ(cuda::parse_fp8_numerics("w8a8"), cuda::Fp8Numerics::kW8A8);
  for (const char* bad : {"fp4", "", "W8A8"}) {
    EXPECT_THROW(cuda::parse_fp8_numerics(bad), std::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace ds::kernels
