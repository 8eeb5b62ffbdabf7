#include "kernels/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace ds::kernels {
namespace {

TEST(CpuRmsNorm, HandCheckedWithZeroCentredWeight) {
  const float x[] = {1, 2, 3, 4};
  const float w[] = {0.f, 1.f, -0.5f, 0.25f};  // scales 1, 2, 0.5, 1.25
  float y[4];
  const float eps = 1e-6f;
  cpu::rms_norm(x, 4, w, y, 4, 1, 4, eps);
  const float inv = 1.f / std::sqrt(7.5f + eps);  // mean(1,4,9,16) = 7.5
  EXPECT_NEAR(y[0], 1 * inv * 1.f, 1e-6);
  EXPECT_NEAR(y[1], 2 * inv * 2.f, 1e-6);
  EXPECT_NEAR(y[2], 3 * inv * 0.5f, 1e-6);
  EXPECT_NEAR(y[3], 4 * inv * 1.25f, 1e-6);
}

TEST(CpuRmsNorm, OutputHasUnitRmsWithZeroWeight) {
  std::vector<float> x(64), w(64, 0.f), y(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = std::sin(float(i)) * 10.f;
  cpu::rms_norm(x.data(), 64, w.data(), y.data(), 64, 1, 64, 0.f);
  double ss = 0;
  for (float v : y) ss += double(v) * v;
  EXPECT_NEAR(ss / 64, 1.0, 1e-5);
}

TEST(CpuAddRmsNorm, UpdatesResidualThenNormalises) {
  std::vector<float> residual = {1, 1, 1, 1, 2, 2, 2, 2};
  const std::vector<float> x = {0, 1, 2, 3, 9, 9, -1, 0, 0, 0, 0, 0};  // ldx 6, T 2, H 4
  const std::vector<float> w(4, 0.f);
  std::vector<float> y(8), expected(8);
  cpu::add_rms_norm(residual.data(), x.data(), 6, w.data(), y.data(), 4, 2, 4, 1e-6f);
  EXPECT_EQ(residual, (std::vector<float>{1, 2, 3, 4, 1, 2, 2, 2}));
  cpu::rms_norm(residual.data(), 4, w.data(), expected.data(), 4, 2, 4, 1e-6f);
  EXPECT_EQ(y, expected);
}

TEST(CpuHeadRmsNorm, ReadsStridedHeadsOnly) {
  // Two heads of dim 2 interleaved with "gate" values that must not influence the result.
  const std::vector<float> x = {3, 4, 100, 100, 1, 0, -100, 7};  // [q0 | g0 | q1 | g1], head stride 4
  const std::vector<float> w = {0.f, 0.f};
  std::vector<float> y(4);
  cpu::head_rms_norm(x.data(), 8, 4, w.data(), y.data(), 4, 1, 2, 2, 0.f);
  const float inv0 = 1.f / std::sqrt(12.5f), inv1 = 1.f / std::sqrt(0.5f);
  EXPECT_NEAR(y[0], 3 * inv0, 1e-6);
  EXPECT_NEAR(y[1], 4 * inv0, 1e-6);
  EXPECT_NEAR(y[2], 1 * inv1, 1e-6);
  EXPECT_NEAR(y[3], 0.f, 1e-6);
}

}  // namespace
}  // namespace ds::kernels
