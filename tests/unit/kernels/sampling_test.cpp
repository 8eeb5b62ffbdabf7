#include "kernels/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "tests/unit/kernels/random_data.h"

namespace ds::kernels {
namespace {

// Logits of a realistic spread (standard deviation 3).
std::vector<float> random_logits(size_t n, unsigned seed) { return test::random_normal(n, seed, 3.f); }

int32_t sample_one(const std::vector<float>& logits, const SamplingParams& p, float* logprob = nullptr) {
  int32_t token = -1;
  float lp = 0;
  cpu::sample(logits.data(), int64_t(logits.size()), 1, int64_t(logits.size()), &p, &token, &lp);
  if (logprob) *logprob = lp;
  return token;
}

TEST(SamplingUniform, InOpenUnitIntervalAndKeyedByAllInputs) {
  for (uint64_t i = 0; i < 1000; ++i) {
    const float u = sampling_uniform(7, 3, i);
    EXPECT_GT(u, 0.f);
    EXPECT_LT(u, 1.f);
  }
  EXPECT_EQ(sampling_uniform(1, 2, 3), sampling_uniform(1, 2, 3));
  EXPECT_NE(sampling_uniform(1, 2, 3), sampling_uniform(2, 2, 3));
  EXPECT_NE(sampling_uniform(1, 2, 3), sampling_uniform(1, 3, 3));
  EXPECT_NE(sampling_uniform(1, 2, 3), sampling_uniform(1, 2, 4));
}

TEST(CpuSample, GreedyPicksArgmaxAndReportsRawLogprob) {
  const std::vector<float> logits = {1.f, 3.f, 2.f, 3.f};
  SamplingParams p;
  p.temperature = 0.f;
  float lp = 0;
  EXPECT_EQ(sample_one(logits, p, &lp), 1);  // lowest id among equal maxima
  const double z = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(lp, 3.0 - std::log(z), 1e-6);
}

TEST(CpuSample, ReproducibleBySeedAndStep) {
  const auto logits = random_logits(1000, 1);
  SamplingParams p;
  p.temperature = 1.5f;
  p.seed = 42;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 20; ++step) {
    p.step = step;
    const int32_t a = sample_one(logits, p), b = sample_one(logits, p);
    EXPECT_EQ(a, b);
    seen.insert(a);
  }
  EXPECT_GT(seen.size(), 5u);  // steps draw different tokens at a high temperature
  p.step = 0;
  std::set<int32_t> by_seed;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    by_seed.insert(sample_one(logits, p));
  }
  EXPECT_GT(by_seed.size(), 5u);
}

TEST(CpuKeptMask, TopKTopPMinP) {
  // probs proportional to 8, 4, 2, 1, 1 (total 16): logits log of those.
  const std::vector<float> logits = {std::log(8.f), std::log(4.f), std::log(2.f), std::log(1.f), std::log(1.f)};
  auto kept = [&](SamplingParams p) {
    std::vector<uint8_t> mask(logits.size());
    cpu::kept_mask(logits.data(), int64_t(logits.size()), p, mask.data());
    return mask;
  };
  SamplingParams p;
  p.top_k = 2;
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 1, 0, 0, 0}));
  p.top_k = 4;  // the 4th value ties with the 5th: both kept
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 1, 1, 1, 1}));
  p = SamplingParams{};
  p.top_p = 0.5f;  // 8/16 reaches it
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 0, 0, 0, 0}));
  p.top_p = 0.7f;  // needs 12/16
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 1, 0, 0, 0}));
  p = SamplingParams{};
  p.min_p = 0.25f;  // p >= 2/16
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 1, 1, 0, 0}));
  p.top_k = 2;
  p.top_p = 0.6f;  // over the top-2 renormalised (8/12, 4/12): 0.667 >= 0.6
  EXPECT_EQ(kept(p), (std::vector<uint8_t>{1, 0, 0, 0, 0}));
}

TEST(CpuSample, SamplesStayInKeptSetAndFollowTheDistribution) {
  const std::vector<float> logits = {std::log(8.f), std::log(4.f), std::log(2.f), std::log(1.f), std::log(1.f)};
  SamplingParams p;
  p.top_k = 3;
  p.seed = 9;
  std::vector<int> counts(5, 0);
  const int n = 20000;
  for (int step = 0; step < n; ++step) {
    p.step = uint64_t(step);
    counts[size_t(sample_one(logits, p))]++;
  }
  EXPECT_EQ(counts[3] + counts[4], 0);
  // Expected 8/14, 4/14, 2/14; binomial stddev < 0.004, allow 0.015.
  EXPECT_NEAR(counts[0] / double(n), 8.0 / 14, 0.015);
  EXPECT_NEAR(counts[1] / double(n), 4.0 / 14, 0.015);
  EXPECT_NEAR(counts[2] / double(n), 2.0 / 14, 0.015);
}

TEST(CpuSample, TemperatureSharpens) {
  const std::vector<float> logits = {1.f, 0.f};
  SamplingParams p;
  p.temperature = 0.25f;  // p0 = 1/(1+e^-4) = 0.982
  int zeros = 0;
  for (int step = 0; step < 4000; ++step) {
    p.step = uint64_t(step);
    zeros += sample_one(logits, p) == 0;
  }
  EXPECT_NEAR(zeros / 4000.0, 1 / (1 + std::exp(-4.0)), 0.01);
}

TEST(CpuSample, RejectsBadParams) {
  const std::vector<float> logits = {0.f, 1.f};
  SamplingParams p;
  p.top_p = 0.f;
  EXPECT_THROW(sample_one(logits, p), std::invalid_argument);
  p = SamplingParams{};
  p.min_p = 2.f;
  EXPECT_THROW(sample_one(logits, p), std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
