#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gated_delta_rule.h"
#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels {
namespace {

// Inputs of one layer call: mixed q|k|v rows [T][2K+V], g (negative) and beta in (0,1).
struct RuleCase {
  GdnDims d;
  int64_t T;
  int64_t num_slots;
  std::vector<float> qkv, g, beta, state;

  RuleCase(GdnDims dims, int64_t tokens, int64_t slots, uint32_t seed) : d(dims), T(tokens), num_slots(slots) {
    qkv = test::random_vector(T * d.conv_dim(), seed);
    g = test::random_vector(T * d.num_v_heads, seed + 1, -0.3f, -0.01f);
    beta = test::random_vector(T * d.num_v_heads, seed + 2, 0.05f, 0.95f);
    state = test::random_vector(num_slots * d.state_floats(), seed + 3, -0.5f, 0.5f);
  }
  const float* q(int64_t t = 0) const { return qkv.data() + t * d.conv_dim(); }
  const float* k(int64_t t = 0) const { return q(t) + d.key_dim(); }
  const float* v(int64_t t = 0) const { return q(t) + 2 * d.key_dim(); }
  int64_t stride() const { return d.conv_dim(); }
};

TEST(GatedDeltaRule, HandComputedFirstWrite) {
  // Zero state, beta = 1, g = 0, q = k: S = v k̂ᵀ and o = v (k̂·q̂) = v |k̂|² / sqrt(dk).
  const GdnDims d{1, 1, 2, 2};
  std::vector<float> qkv{3, 4, 3, 4, 5, -7};  // q = k = [3, 4], v = [5, -7]
  const std::vector<float> g{0}, beta{1};
  std::vector<float> state(4, 123.f), out(2);
  test::HostBatch batch;
  batch.add(1, 0, false);
  cpu::gated_delta_rule_prefill(qkv.data(), qkv.data() + 2, qkv.data() + 4, 6, g.data(), beta.data(), state.data(),
                                batch.view(), d, out.data());
  const float n2 = 25.f / (25.f + 1e-6f);  // |k̂|²
  EXPECT_NEAR(out[0], 5 * n2 / std::sqrt(2.f), 1e-6);
  EXPECT_NEAR(out[1], -7 * n2 / std::sqrt(2.f), 1e-6);
  const float k0 = 3 / std::sqrt(25.f + 1e-6f), k1 = 4 / std::sqrt(25.f + 1e-6f);
  EXPECT_NEAR(state[0], 5 * k0, 1e-6);
  EXPECT_NEAR(state[1], 5 * k1, 1e-6);
  EXPECT_NEAR(state[2], -7 * k0, 1e-6);
  EXPECT_NEAR(state[3], -7 * k1, 1e-6);
}

TEST(GatedDeltaRule, BetaZeroOnlyDecays) {
  const GdnDims d{1, 2, 4, 3};
  RuleCase c(d, 1, 1, 30);
  std::fill(c.beta.begin(), c.beta.end(), 0.f);
  const auto before = c.state;
  std::vector<float> out(d.value_dim());
  const int32_t slot = 0;
  cpu::gated_delta_rule_decode(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), c.state.data(), &slot, 1, d,
                               out.data());
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t i = 0; i < 12; ++i) {
      EXPECT_NEAR(c.state[h * 12 + i], std::exp(c.g[h]) * before[h * 12 + i], 1e-6);
    }
  }
}

TEST(GatedDeltaRule, DeltaRuleStoresValueAtKey) {
  // With beta = 1 and g = 0 the new state maps the (normalised) key to the value exactly.
  const GdnDims d{1, 1, 8, 5};
  RuleCase c(d, 1, 1, 40);
  c.g[0] = 0.f;
  c.beta[0] = 1.f;
  std::vector<float> out(d.value_dim());
  const int32_t slot = 0;
  cpu::gated_delta_rule_decode(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), c.state.data(), &slot, 1, d,
                               out.data());
  double n2 = 0;
  for (int64_t j = 0; j < 8; ++j) n2 += double(c.k()[j]) * c.k()[j];
  for (int64_t i = 0; i < 5; ++i) {
    double sk = 0;
    for (int64_t j = 0; j < 8; ++j) sk += c.state[i * 8 + j] * c.k()[j] / std::sqrt(n2 + 1e-6);
    EXPECT_NEAR(sk, c.v()[i], 1e-5) << i;  // |k̂|² = 1 up to eps
  }
}

class ChunkedTest : public testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(ChunkedTest, ChunkedEqualsRecurrent) {
  const auto [hk, ratio, chunk] = GetParam();
  const GdnDims d{hk, hk * ratio, 16, 8};
  test::HostBatch batch;
  batch.add(37, 2, true);
  batch.add(1, 0, false);
  batch.add(0, 4, true);
  batch.add(chunk, 1, false);
  batch.add(2 * chunk + 3, 3, true);
  RuleCase c(d, batch.num_tokens(), 5, 50);
  auto s_rec = c.state, s_chk = c.state;
  std::vector<float> o_rec(c.T * d.value_dim()), o_chk(c.T * d.value_dim());
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), s_rec.data(), batch.view(),
                                d, o_rec.data());
  cpu::gated_delta_rule_prefill_chunked(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), s_chk.data(),
                                        batch.view(), d, chunk, o_chk.data());
  EXPECT_LT(test::max_abs_diff(o_rec, o_chk), 2e-5f);
  EXPECT_LT(test::max_abs_diff(s_rec, s_chk), 2e-5f);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChunkedTest,
                         testing::Combine(testing::Values(1, 2), testing::Values(1, 3), testing::Values(1, 4, 16, 64)));

TEST(GatedDeltaRule, PrefillInPartsAndDecodeEqualWhole) {
  const GdnDims d{2, 4, 8, 8};
  const int64_t n = 20, split = 13;
  RuleCase c(d, n, 3, 60);
  test::HostBatch whole, first, second;
  whole.add(n, 1, true);
  first.add(split, 1, true);
  second.add(n - split, 1, true);
  auto s_whole = c.state, s_parts = c.state, s_decode = c.state;
  std::vector<float> o_whole(n * d.value_dim()), o_parts(n * d.value_dim()), o_decode(n * d.value_dim());
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), s_whole.data(),
                                whole.view(), d, o_whole.data());
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), s_parts.data(),
                                first.view(), d, o_parts.data());
  const int64_t o_split = split * d.value_dim(), gb_split = split * d.num_v_heads;
  cpu::gated_delta_rule_prefill(c.q(split), c.k(split), c.v(split), c.stride(), c.g.data() + gb_split,
                                c.beta.data() + gb_split, s_parts.data(), second.view(), d, o_parts.data() + o_split);
  EXPECT_LT(test::max_abs_diff(o_whole, o_parts), 1e-6f);
  EXPECT_LT(test::max_abs_diff(s_whole, s_parts), 1e-6f);
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), s_decode.data(),
                                first.view(), d, o_decode.data());
  const int32_t slot = 1;
  for (int64_t t = split; t < n; ++t) {
    cpu::gated_delta_rule_decode(c.q(t), c.k(t), c.v(t), c.stride(), c.g.data() + t * d.num_v_heads,
                                 c.beta.data() + t * d.num_v_heads, s_decode.data(), &slot, 1, d,
                                 o_decode.data() + t * d.value_dim());
  }
  EXPECT_LT(test::max_abs_diff(o_whole, o_decode), 1e-6f);
  EXPECT_LT(test::max_abs_diff(s_whole, s_decode), 1e-6f);
}

TEST(GatedDeltaRule, ZeroInitialStateIgnoresSlotAndValueHeadsShareKeyHead) {
  // Hv/Hk = 3: value heads 0..2 read key head 0. Heads with identical v, g, beta and the same key
  // head produce identical outputs; has_initial_state = 0 ignores the slot's garbage.
  const GdnDims d{1, 3, 4, 4};
  RuleCase c(d, 6, 1, 70);
  for (int64_t t = 0; t < c.T; ++t) {
    float* v = c.qkv.data() + t * c.stride() + 2 * d.key_dim();
    for (int64_t h = 1; h < 3; ++h) {
      std::copy(v, v + 4, v + 4 * h);
      c.g[t * 3 + h] = c.g[t * 3];
      c.beta[t * 3 + h] = c.beta[t * 3];
    }
  }
  test::HostBatch batch;
  batch.add(6, 0, false);
  std::vector<float> out(c.T * d.value_dim());
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), c.state.data(),
                                batch.view(), d, out.data());
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_EQ(out[t * 12 + i], out[t * 12 + 4 + i]);
      EXPECT_EQ(out[t * 12 + i], out[t * 12 + 8 + i]);
    }
  }
  auto fresh = c.state;
  std::fill(fresh.begin(), fresh.end(), 0.f);
  std::vector<float> out0(c.T * d.value_dim());
  batch.has_initial_state[0] = 1;
  cpu::gated_delta_rule_prefill(c.q(), c.k(), c.v(), c.stride(), c.g.data(), c.beta.data(), fresh.data(), batch.view(),
                                d, out0.data());
  EXPECT_EQ(out, out0);
}

}  // namespace
}  // namespace ds::kernels
