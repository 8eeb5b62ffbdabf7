#include "kernels/gdn_conv.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels {
namespace {

float silu(float x) { return x / (1.f + std::exp(-x)); }

TEST(GdnConv, HandComputedSingleChannel) {
  // One channel, weights [1, 2, 3, 4], state [10, 20, 30], inputs 1, 2 (row stride 3).
  const std::vector<float> w{1, 2, 3, 4};
  std::vector<float> state{10, 20, 30};
  const std::vector<float> x{1, -7, -7, 2, -7, -7};
  test::HostBatch batch;
  batch.add(2, 0, true);
  std::vector<float> out(2);
  cpu::gdn_conv_prefill(x.data(), 3, w.data(), 1, state.data(), batch.view(), out.data());
  EXPECT_FLOAT_EQ(out[0], silu(1 * 10 + 2 * 20 + 3 * 30 + 4 * 1));
  EXPECT_FLOAT_EQ(out[1], silu(1 * 20 + 2 * 30 + 3 * 1 + 4 * 2));
  EXPECT_EQ(state, (std::vector<float>{30, 1, 2}));
}

TEST(GdnConv, ZeroInitialStateIgnoresSlot) {
  const std::vector<float> w{1, 2, 3, 4};
  std::vector<float> state{10, 20, 30};
  const std::vector<float> x{5};
  test::HostBatch batch;
  batch.add(1, 0, false);
  std::vector<float> out(1);
  cpu::gdn_conv_prefill(x.data(), 1, w.data(), 1, state.data(), batch.view(), out.data());
  EXPECT_FLOAT_EQ(out[0], silu(4 * 5));
  EXPECT_EQ(state, (std::vector<float>{0, 0, 5}));
}

struct ConvCase {
  int64_t C = 6, slots = 4, stride = 9;
  std::vector<float> w = test::random_vector(C * 4, 11);
  std::vector<float> state0 = test::random_vector(slots * C * 3, 12);
};

// Prefill of a whole sequence equals prefill of its two halves, and equals prefill of a prefix
// followed by token-by-token decode: outputs and final state.
TEST(GdnConv, ContinuationMatchesWholeSequence) {
  ConvCase c;
  for (int64_t split : {0, 1, 2, 3, 7, 10}) {
    const int64_t n = 10;
    const auto x = test::random_vector(n * c.stride, 13);
    auto whole_state = c.state0;
    std::vector<float> whole(n * c.C);
    test::HostBatch all;
    all.add(n, 2, true);
    cpu::gdn_conv_prefill(x.data(), c.stride, c.w.data(), c.C, whole_state.data(), all.view(), whole.data());

    auto parts_state = c.state0;
    std::vector<float> parts(n * c.C);
    test::HostBatch first, second;
    first.add(split, 2, true);
    second.add(n - split, 2, true);
    cpu::gdn_conv_prefill(x.data(), c.stride, c.w.data(), c.C, parts_state.data(), first.view(), parts.data());
    cpu::gdn_conv_prefill(x.data() + split * c.stride, c.stride, c.w.data(), c.C, parts_state.data(), second.view(),
                          parts.data() + split * c.C);
    EXPECT_LT(test::max_abs_diff(whole, parts), 1e-6f) << "split " << split;
    EXPECT_EQ(whole_state, parts_state) << "split " << split;

    auto decode_state = c.state0;
    std::vector<float> decoded(n * c.C);
    cpu::gdn_conv_prefill(x.data(), c.stride, c.w.data(), c.C, decode_state.data(), first.view(), decoded.data());
    const int32_t slot = 2;
    for (int64_t t = split; t < n; ++t) {
      cpu::gdn_conv_decode(x.data() + t * c.stride, c.stride, c.w.data(), c.C, decode_state.data(), &slot, 1,
                           decoded.data() + t * c.C);
    }
    EXPECT_LT(test::max_abs_diff(whole, decoded), 1e-6f) << "split " << split;
    EXPECT_EQ(whole_state, decode_state) << "split " << split;
  }
}

TEST(GdnConv, VarlenBatchEqualsSequencesOneByOne) {
  ConvCase c;
  test::HostBatch batch;
  batch.add(5, 3, true);
  batch.add(0, 1, true);
  batch.add(2, 0, false);
  batch.add(4, 2, true);
  const int64_t T = batch.num_tokens();
  const auto x = test::random_vector(T * c.stride, 14);
  auto state = c.state0;
  std::vector<float> out(T * c.C);
  cpu::gdn_conv_prefill(x.data(), c.stride, c.w.data(), c.C, state.data(), batch.view(), out.data());
  auto state1 = c.state0;
  std::vector<float> out1(T * c.C);
  for (size_t s = 0; s < batch.slots.size(); ++s) {
    test::HostBatch one;
    one.add(batch.cu_seqlens[s + 1] - batch.cu_seqlens[s], batch.slots[s], batch.has_initial_state[s]);
    cpu::gdn_conv_prefill(x.data() + batch.cu_seqlens[s] * c.stride, c.stride, c.w.data(), c.C, state1.data(),
                          one.view(), out1.data() + batch.cu_seqlens[s] * c.C);
  }
  EXPECT_EQ(out, out1);
  EXPECT_EQ(state, state1);
  // Slot 1 had an empty sequence: its state is unchanged.
  for (int64_t i = 0; i < c.C * 3; ++i) EXPECT_EQ(state[c.C * 3 + i], c.state0[c.C * 3 + i]);
}

TEST(GdnConv, RejectsBadBatch) {
  std::vector<float> buf(64);
  test::HostBatch batch;
  batch.add(2, 0, true);
  GdnVarlenBatch view = batch.view();
  view.num_tokens = 3;
  EXPECT_THROW(cpu::gdn_conv_prefill(buf.data(), 1, buf.data(), 1, buf.data(), view, buf.data()),
               std::invalid_argument);
  EXPECT_THROW(cpu::gdn_conv_prefill(buf.data(), 1, buf.data(), 2, buf.data(), batch.view(), buf.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
