#include "kernels/gdn_gating.h"

#include <gtest/gtest.h>

#include <cmath>

namespace ds::kernels {
namespace {

TEST(GdnGating, HandComputedValues) {
  // Two heads, two tokens, a/b with row stride 3.
  const std::vector<float> a{0.5f, 30.f, 99.f, -1.f, 0.f, 99.f};
  const std::vector<float> b{0.f, 2.f, 99.f, -3.f, 100.f, 99.f};
  const std::vector<float> A_log{0.f, std::log(2.f)};
  const std::vector<float> dt_bias{-0.5f, 1.f};
  std::vector<float> g(4), beta(4);
  cpu::gdn_gating(a.data(), 3, b.data(), 3, A_log.data(), dt_bias.data(), 2, 2, g.data(), beta.data());
  EXPECT_FLOAT_EQ(g[0], -std::log(2.f));  // softplus(0) = ln 2, exp(A_log) = 1
  EXPECT_FLOAT_EQ(g[1], -2.f * 31.f);     // above the threshold softplus(x) = x
  EXPECT_FLOAT_EQ(g[2], -std::log1p(std::exp(-1.5f)));
  EXPECT_FLOAT_EQ(g[3], -2.f * std::log1p(std::exp(1.f)));
  EXPECT_FLOAT_EQ(beta[0], 0.5f);
  EXPECT_FLOAT_EQ(beta[1], 1.f / (1.f + std::exp(-2.f)));
  EXPECT_FLOAT_EQ(beta[2], 1.f / (1.f + std::exp(3.f)));
  EXPECT_FLOAT_EQ(beta[3], 1.f);
}

TEST(GdnGating, RejectsShortStride) {
  std::vector<float> buf(16);
  EXPECT_THROW(cpu::gdn_gating(buf.data(), 1, buf.data(), 2, buf.data(), buf.data(), 1, 2, buf.data(), buf.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
