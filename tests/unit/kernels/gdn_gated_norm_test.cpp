#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gated_norm.h"
#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels {
namespace {

float silu(float x) { return x / (1.f + std::exp(-x)); }

TEST(GdnGatedNorm, HandComputedConstantHead) {
  // x = [3, -3, 3, -3] has rms 3, so rmsnorm(x) = [1, -1, 1, -1] (eps 0); head 1 is [0.5, ...].
  const std::vector<float> x{3, -3, 3, -3, 0.5f, 0.5f, 0.5f, 0.5f};
  const std::vector<float> z{1, 2, 0, -1, 1, 1, 1, 1, 99};  // row stride 9
  const std::vector<float> w{1, 2, 3, 4};
  std::vector<float> y(8);
  cpu::gated_rms_norm(x.data(), z.data(), 9, w.data(), 1, 2, 4, 0.f, y.data());
  EXPECT_FLOAT_EQ(y[0], 1 * silu(1));
  EXPECT_FLOAT_EQ(y[1], -2 * silu(2));
  EXPECT_FLOAT_EQ(y[2], 0.f);
  EXPECT_FLOAT_EQ(y[3], -4 * silu(-1));
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y[4 + i], w[i] * silu(1));
}

TEST(GdnGatedNorm, EpsAndScaleInvariance) {
  // Without eps the output does not depend on the scale of x; eps shrinks small heads.
  const auto x = test::random_vector(16, 21);
  const auto z = test::random_vector(16, 22);
  const auto w = test::random_vector(8, 23);
  auto x10 = x;
  for (auto& v : x10) v *= 10;
  std::vector<float> y(16), y10(16), y_eps(16);
  cpu::gated_rms_norm(x.data(), z.data(), 8, w.data(), 2, 1, 8, 0.f, y.data());
  cpu::gated_rms_norm(x10.data(), z.data(), 8, w.data(), 2, 1, 8, 0.f, y10.data());
  EXPECT_LT(test::max_abs_diff(y, y10), 1e-5f);
  cpu::gated_rms_norm(x.data(), z.data(), 8, w.data(), 2, 1, 8, 1.f, y_eps.data());
  for (int i = 0; i < 16; ++i) EXPECT_LT(std::abs(y_eps[i]), std::abs(y[i]) + 1e-7f);
}

}  // namespace
}  // namespace ds::kernels
