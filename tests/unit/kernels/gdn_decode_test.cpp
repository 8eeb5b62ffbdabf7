#include "kernels/gdn_decode.h"

#include <gtest/gtest.h>

#include "kernels/gated_delta_rule.h"
#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_gating.h"
#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels {
namespace {

// The fused decode path, token by token, equals the prefill path over the whole sequence
// (conv prefill → gating → recurrence → gated norm) reading views of one merged projection.
TEST(GdnDecode, TokenByTokenEqualsPrefillOfMergedViews) {
  const GdnDims d{2, 6, 8, 4};
  const int64_t n = 7, W = d.merged_width(), C = d.conv_dim(), Hv = d.num_v_heads;
  const auto proj = test::random_vector(n * W, 80);
  const auto conv_w = test::random_vector(C * 4, 81);
  const auto A_log = test::random_vector(Hv, 82, -1.f, 0.5f);
  const auto dt_bias = test::random_vector(Hv, 83);
  const auto norm_w = test::random_vector(d.head_v_dim, 84);
  const auto conv0 = test::random_vector(2 * d.conv_state_floats(), 85);
  const auto ssm0 = test::random_vector(2 * d.state_floats(), 86, -0.3f, 0.3f);
  const float eps = 1e-6f;

  // Prefill path on slot 1.
  auto conv_p = conv0, ssm_p = ssm0;
  test::HostBatch batch;
  batch.add(n, 1, true);
  std::vector<float> qkv(n * C), g(n * Hv), beta(n * Hv), core(n * d.value_dim()), y_p(n * d.value_dim());
  cpu::gdn_conv_prefill(proj.data(), W, conv_w.data(), C, conv_p.data(), batch.view(), qkv.data());
  cpu::gdn_gating(proj.data() + d.a_offset(), W, proj.data() + d.b_offset(), W, A_log.data(), dt_bias.data(), n, Hv,
                  g.data(), beta.data());
  cpu::gated_delta_rule_prefill(qkv.data(), qkv.data() + d.key_dim(), qkv.data() + 2 * d.key_dim(), C, g.data(),
                                beta.data(), ssm_p.data(), batch.view(), d, core.data());
  cpu::gated_rms_norm(core.data(), proj.data() + d.z_offset(), W, norm_w.data(), n, Hv, d.head_v_dim, eps, y_p.data());

  // Decode path, one token at a time on slot 1.
  auto conv_d = conv0, ssm_d = ssm0;
  std::vector<float> y_d(n * d.value_dim());
  const int32_t slot = 1;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = proj.data() + t * W;
    GdnDecodeInputs<float> in{row,
                              W,
                              row + d.z_offset(),
                              W,
                              row + d.b_offset(),
                              W,
                              row + d.a_offset(),
                              W,
                              conv_w.data(),
                              A_log.data(),
                              dt_bias.data(),
                              norm_w.data(),
                              eps};
    cpu::gdn_decode(in, {conv_d.data(), ssm_d.data(), &slot}, 1, d, y_d.data() + t * d.value_dim());
  }
  EXPECT_LT(test::max_abs_diff(y_p, y_d), 1e-5f);
  EXPECT_LT(test::max_abs_diff(conv_p, conv_d), 1e-7f);
  EXPECT_LT(test::max_abs_diff(ssm_p, ssm_d), 1e-5f);
}

}  // namespace
}  // namespace ds::kernels
