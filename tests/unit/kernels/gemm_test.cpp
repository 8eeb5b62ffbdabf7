#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
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

}  // namespace
}  // namespace ds::kernels
