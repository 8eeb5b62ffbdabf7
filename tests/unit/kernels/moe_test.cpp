#include "kernels/moe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace ds::kernels {
namespace {

std::vector<float> random_floats(size_t n, unsigned seed, float stddev = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(CpuMoeRoute, TopKWithAndWithoutRenormalisation) {
  const std::vector<float> logits = {0.f, std::log(4.f), std::log(2.f), std::log(1.f)};  // probs 1:4:2:1 of 8
  int32_t ids[2];
  float w[2];
  cpu::moe_route(logits.data(), 1, 4, 2, false, ids, w);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(w[0], 0.5f, 1e-6);
  EXPECT_NEAR(w[1], 0.25f, 1e-6);
  cpu::moe_route(logits.data(), 1, 4, 2, true, ids, w);
  EXPECT_NEAR(w[0], 2.f / 3.f, 1e-6);
  EXPECT_NEAR(w[1], 1.f / 3.f, 1e-6);
}

TEST(CpuMoeRoute, TiesPickTheLowerExpertId) {
  const std::vector<float> logits = {1.f, 2.f, 2.f, 2.f};
  int32_t ids[2];
  float w[2];
  cpu::moe_route(logits.data(), 1, 4, 2, true, ids, w);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
}

// A NaN logit counts as -inf: never preferred, no probability; an all-NaN row still gets k distinct
// experts (its weights are NaN: nothing to normalise by).
TEST(CpuMoeRoute, NanLogitsAreNeverPreferred) {
  const std::vector<float> logits = {NAN, std::log(1.f), NAN, std::log(3.f), std::log(2.f)};
  int32_t ids[3];
  float w[3];
  cpu::moe_route(logits.data(), 1, 5, 3, /*norm_topk_prob=*/false, ids, w);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 4);
  EXPECT_EQ(ids[2], 1);
  EXPECT_FLOAT_EQ(w[0], 0.5f);  // 3 / (3 + 2 + 1) of the softmax itself: the NaNs carry nothing
  EXPECT_FLOAT_EQ(w[2], 1.f / 6.f);
  const std::vector<float> all_nan(4, NAN);
  cpu::moe_route(all_nan.data(), 1, 4, 3, true, ids, w);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 1);
  EXPECT_EQ(ids[2], 2);
}

// The block computed the dense way: every expert on every token, weighted by a routing mask.
TEST(CpuMoeForward, MatchesDenseFormulation) {
  const MoeDims dims{16, 6, 2, 8, 12, true};
  const int64_t T = 5, H = dims.hidden, E = dims.num_experts, I = dims.expert_intermediate,
                Is = dims.shared_intermediate;
  const auto x = random_floats(size_t(T * H), 1), router = random_floats(size_t(E * H), 2),
             gate_up = random_floats(size_t(E * 2 * I * H), 3, 0.3f), down = random_floats(size_t(E * H * I), 4, 0.3f),
             s_gate_up = random_floats(size_t(2 * Is * H), 5, 0.3f), s_down = random_floats(size_t(H * Is), 6, 0.3f),
             s_gate = random_floats(size_t(H), 7);
  std::vector<float> out(size_t(T * H), NAN);
  cpu::moe_forward(x.data(), T, dims,
                   {router.data(), gate_up.data(), down.data(), s_gate_up.data(), s_down.data(), s_gate.data()},
                   out.data());

  auto silu = [](double a) { return a / (1 + std::exp(-a)); };
  auto expert = [&](const float* xt, const float* gu, const float* dn, int64_t inter, std::vector<double>& y) {
    std::vector<double> act(static_cast<size_t>(inter));
    for (int64_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int64_t h = 0; h < H; ++h) {
        g += double(gu[i * H + h]) * xt[h];
        u += double(gu[(inter + i) * H + h]) * xt[h];
      }
      act[size_t(i)] = silu(g) * u;
    }
    y.assign(size_t(H), 0.0);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < inter; ++i) y[size_t(h)] += double(dn[h * inter + i]) * act[size_t(i)];
    }
  };
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * H;
    std::vector<double> probs(static_cast<size_t>(E));
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t h = 0; h < H; ++h) probs[size_t(e)] += double(router[size_t(e * H + h)]) * xt[h];
      mx = std::max(mx, probs[size_t(e)]);
    }
    for (auto& p : probs) sum += p = std::exp(p - mx);
    // Mask of the two largest.
    std::vector<int> order(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) order[size_t(e)] = e;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return probs[size_t(a)] > probs[size_t(b)]; });
    const double kept = probs[size_t(order[0])] + probs[size_t(order[1])];
    std::vector<double> expected(size_t(H), 0.0), y;
    for (int64_t e = 0; e < E; ++e) {
      const bool routed = e == order[0] || e == order[1];
      expert(xt, gate_up.data() + e * 2 * I * H, down.data() + e * H * I, I, y);
      for (int64_t h = 0; h < H; ++h) expected[size_t(h)] += (routed ? probs[size_t(e)] / kept : 0.0) * y[size_t(h)];
    }
    expert(xt, s_gate_up.data(), s_down.data(), Is, y);
    double sg = 0;
    for (int64_t h = 0; h < H; ++h) sg += double(s_gate[size_t(h)]) * xt[h];
    for (int64_t h = 0; h < H; ++h) {
      expected[size_t(h)] += y[size_t(h)] / (1 + std::exp(-sg));
      EXPECT_NEAR(out[size_t(t * H + h)], expected[size_t(h)], 1e-4) << t << "," << h;
    }
  }
}

TEST(CpuMoe, RejectsBadDims) {
  EXPECT_THROW(validate_moe_dims(MoeDims{16, 4, 5, 8, 0, true}), std::invalid_argument);
  EXPECT_THROW(validate_moe_dims(MoeDims{0, 4, 1, 8, 0, true}), std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
