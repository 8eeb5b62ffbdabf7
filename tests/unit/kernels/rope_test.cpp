#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/norm.h"

#include "tests/unit/kernels/random_data.h"

namespace ds::kernels {
namespace {

using test::random_normal;

double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

TEST(CpuRope, HandCheckedSingleFrequency) {
  // head_dim 4, rotary_dim 2: one frequency (inv_freq[0] = 1), dims 2 and 3 pass through.
  std::vector<float> x = {1.f, 2.f, 5.f, 6.f};
  const int32_t pos = 3;
  cpu::rope(x.data(), 4, 4, 1, 1, &pos, RopeParams{4, 2, 10000.f});
  EXPECT_NEAR(x[0], 1 * std::cos(3.f) - 2 * std::sin(3.f), 1e-6);
  EXPECT_NEAR(x[1], 2 * std::cos(3.f) + 1 * std::sin(3.f), 1e-6);
  EXPECT_EQ(x[2], 5.f);
  EXPECT_EQ(x[3], 6.f);
}

TEST(CpuRope, PositionZeroIsIdentityAndNormsArePreserved) {
  const RopeParams params{256, 64, 10000000.f};
  auto x = random_normal(3 * 256, 1);
  auto y = x;
  const int32_t positions[] = {0, 17, 100000};
  cpu::rope(y.data(), 256, 256, 3, 1, positions, params);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[size_t(i)], x[size_t(i)]);
  for (int t = 1; t < 3; ++t) {
    const float* a = x.data() + t * 256;
    const float* b = y.data() + t * 256;
    // Each rotated pair (j, j+32) keeps its norm; the pass-through tail is unchanged.
    for (int j = 0; j < 32; ++j) {
      EXPECT_NEAR(a[j] * a[j] + a[j + 32] * a[j + 32], b[j] * b[j] + b[j + 32] * b[j + 32], 1e-4);
    }
    for (int i = 64; i < 256; ++i) EXPECT_EQ(a[i], b[i]);
  }
}

TEST(CpuRope, ScoresDependOnlyOnRelativePosition) {
  const RopeParams params{128, 128, 10000.f};
  const auto q = random_normal(128, 2), k = random_normal(128, 3);
  auto score = [&](int32_t pq, int32_t pk) {
    auto a = q, b = k;
    cpu::rope(a.data(), 128, 128, 1, 1, &pq, params);
    cpu::rope(b.data(), 128, 128, 1, 1, &pk, params);
    return dot(a.data(), b.data(), 128);
  };
  EXPECT_NEAR(score(10, 3), score(107, 100), 1e-3);
  EXPECT_GT(std::fabs(score(10, 3) - score(10, 9)), 1e-3);  // and does depend on it
}

TEST(CpuRope, RejectsBadParams) {
  float x[4] = {};
  const int32_t pos = 0;
  EXPECT_THROW(cpu::rope(x, 4, 4, 1, 1, &pos, RopeParams{4, 3, 1e4f}), std::invalid_argument);
  EXPECT_THROW(cpu::rope(x, 4, 4, 1, 1, &pos, RopeParams{4, 8, 1e4f}), std::invalid_argument);
}

TEST(CpuQkNormRope, EqualsNormThenRopeAndLeavesGateAlone) {
  const int64_t T = 3, Hq = 2, Hkv = 1, D = 8;
  const RopeParams params{D, 4, 1000.f};
  const auto qg = random_normal(size_t(T * Hq * 2 * D), 4), k = random_normal(size_t(T * Hkv * D), 5);
  const auto qw = random_normal(size_t(D), 6), kw = random_normal(size_t(D), 7);
  const int32_t positions[] = {5, 6, 7};
  std::vector<float> q_out(size_t(T * Hq * D)), k_out(size_t(T * Hkv * D));
  cpu::qk_norm_rope(qg.data(), Hq * 2 * D, k.data(), Hkv * D, qw.data(), kw.data(), 1e-6f, positions, T, Hq, Hkv,
                    params, q_out.data(), k_out.data());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < Hq; ++h) {
      std::vector<float> expected(static_cast<size_t>(D));
      cpu::rms_norm(qg.data() + t * Hq * 2 * D + h * 2 * D, D, qw.data(), expected.data(), D, 1, D, 1e-6f);
      cpu::rope(expected.data(), D, D, 1, 1, &positions[t], params);
      for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(q_out[size_t((t * Hq + h) * D + d)], expected[size_t(d)], 1e-5);
    }
    std::vector<float> expected(static_cast<size_t>(D));
    cpu::rms_norm(k.data() + t * D, D, kw.data(), expected.data(), D, 1, D, 1e-6f);
    cpu::rope(expected.data(), D, D, 1, 1, &positions[t], params);
    for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(k_out[size_t(t * D + d)], expected[size_t(d)], 1e-5);
  }
}

}  // namespace
}  // namespace ds::kernels
