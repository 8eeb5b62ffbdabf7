// The GDN core kernels on the GPU against their CPU references: conv (prefill, decode), gating,
// gated RMSNorm, gated delta rule (decode, per-token prefill, chunked prefill) and the fused decode
// path. Fresh random inputs, poisoned outputs, per-rank shapes of the published models, varlen
// batches with and without initial states. Tests named *Long* use T up to 16384; leave them out
// under compute-sanitizer with --gtest_filter=-*Long*.
#include <gtest/gtest.h>

#include "kernels/gated_delta_rule.h"
#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_decode.h"
#include "kernels/gdn_gating.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/gdn_test_util.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using gpu_test::Batch;
using gpu_test::DeviceBatch;
using gpu_test::DeviceBuffer;

// A varlen batch: sequences of the given lengths on slots 1, 2, ... (slot 0 is scratch), every
// other one starting from zero state.
Batch make_batch(const std::vector<int32_t>& lengths) {
  Batch b;
  for (size_t i = 0; i < lengths.size(); ++i) b.add(lengths[i], int32_t(i + 1), i % 2 == 0);
  return b;
}

// ---- conv ----

void check_conv_prefill(const GdnDims& d, const std::vector<int32_t>& lengths) {
  const Batch batch = make_batch(lengths);
  const int64_t C = d.conv_dim(), T = batch.num_tokens(), x_stride = d.merged_width();
  const int64_t num_slots = batch.num_seqs() + 1;
  const auto x = gpu_test::random_bf16_values(T * x_stride, 10);
  const auto w = gpu_test::random_bf16_values(C * 4, 11);
  const auto state0 = gpu_test::random_bf16_values(num_slots * C * 3, 12);
  auto state_ref = state0;
  std::vector<float> out_ref(T * C);
  cpu::gdn_conv_prefill(x.data(), x_stride, w.data(), C, state_ref.data(), batch.view(), out_ref.data());

  DeviceBuffer<bf16> d_x(gpu_test::to_bf16(x)), d_w(gpu_test::to_bf16(w)), d_out(T * C);
  DeviceBuffer<float> d_state(state0);
  DeviceBatch d_batch(batch);
  cuda::gdn_conv_prefill(d_x.get(), x_stride, d_w.get(), C, d_state.get(), d_batch.view, d_out.get(), nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_out.download()), out_ref, 1e-2f, 1e-2f), "");
  EXPECT_EQ(gpu_test::compare(d_state.download(), state_ref, 0, 0), "");
}

TEST(GdnConvGpu, PrefillVarlenWithAndWithoutInitialState) {
  check_conv_prefill({16, 32, 128, 128}, {1, 2, 3, 0, 77, 5, 300});
  check_conv_prefill({8, 24, 128, 128}, {64, 1});
  check_conv_prefill({2, 4, 128, 128}, {2});
  check_conv_prefill({2, 6, 128, 128}, {5, 1, 40});  // merged row of 2060 columns: unaligned rows
}

TEST(GdnConvGpu, PrefillLong) { check_conv_prefill({4, 8, 128, 128}, {16384, 100}); }

TEST(GdnConvGpu, DecodeMatchesReference) {
  const GdnDims d{8, 16, 128, 128};
  const int64_t C = d.conv_dim(), B = 37, x_stride = d.merged_width();
  std::vector<int32_t> slots(B);
  for (int64_t i = 0; i < B; ++i) slots[i] = int32_t((i * 7) % B + 1);  // distinct, shuffled
  const auto x = gpu_test::random_bf16_values(B * x_stride, 13);
  const auto w = gpu_test::random_bf16_values(C * 4, 14);
  const auto state0 = gpu_test::random_bf16_values((B + 1) * C * 3, 15);
  auto state_ref = state0;
  std::vector<float> out_ref(B * C);
  cpu::gdn_conv_decode(x.data(), x_stride, w.data(), C, state_ref.data(), slots.data(), B, out_ref.data());
  DeviceBuffer<bf16> d_x(gpu_test::to_bf16(x)), d_w(gpu_test::to_bf16(w)), d_out(B * C);
  DeviceBuffer<float> d_state(state0);
  DeviceBuffer<int32_t> d_slots(slots);
  cuda::gdn_conv_decode(d_x.get(), x_stride, d_w.get(), C, d_state.get(), d_slots.get(), B, d_out.get(), nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_out.download()), out_ref, 1e-2f, 1e-2f), "");
  EXPECT_EQ(gpu_test::compare(d_state.download(), state_ref, 0, 0), "");
}

// ---- gating and gated norm ----

TEST(GdnGatingGpu, MatchesReference) {
  const int64_t T = 1000, Hv = 48, stride = 2 * Hv + 8;
  const auto ab = gpu_test::random_bf16_values(T * stride, 20, -25.f, 25.f);  // crosses the softplus threshold
  const auto A_log = gpu_test::random_floats(Hv, 21, -2.f, 1.f);
  const auto dt_bias = gpu_test::random_floats(Hv, 22);
  std::vector<float> g_ref(T * Hv), beta_ref(T * Hv);
  cpu::gdn_gating(ab.data() + Hv, stride, ab.data(), stride, A_log.data(), dt_bias.data(), T, Hv, g_ref.data(),
                  beta_ref.data());
  DeviceBuffer<bf16> d_ab(gpu_test::to_bf16(ab));
  DeviceBuffer<float> d_A(A_log), d_dt(dt_bias), d_g(T * Hv), d_beta(T * Hv);
  cuda::gdn_gating(d_ab.get() + Hv, stride, d_ab.get(), stride, d_A.get(), d_dt.get(), T, Hv, d_g.get(), d_beta.get(),
                   nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(d_g.download(), g_ref, 1e-5f, 1e-5f), "");
  EXPECT_EQ(gpu_test::compare(d_beta.download(), beta_ref, 1e-6f, 1e-5f), "");
}

TEST(GdnGatedNormGpu, MatchesReference) {
  const int64_t T = 333, Hv = 24, dv = 128, z_stride = 2 * Hv * dv + 64;
  const auto x = gpu_test::random_bf16_values(T * Hv * dv, 30, -3.f, 3.f);
  const auto z = gpu_test::random_bf16_values(T * z_stride, 31, -4.f, 4.f);
  const auto w = gpu_test::random_bf16_values(dv, 32, 0.5f, 1.5f);
  std::vector<float> y_ref(T * Hv * dv);
  cpu::gated_rms_norm(x.data(), z.data(), z_stride, w.data(), T, Hv, dv, 1e-6f, y_ref.data());
  DeviceBuffer<bf16> d_x(gpu_test::to_bf16(x)), d_z(gpu_test::to_bf16(z)), d_w(gpu_test::to_bf16(w)), d_y(y_ref.size());
  cuda::gated_rms_norm(d_x.get(), d_z.get(), z_stride, d_w.get(), T, Hv, dv, 1e-6f, d_y.get(), nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_y.download()), y_ref, 1e-2f, 1e-2f), "");
}

// ---- gated delta rule ----

// Inputs of one gated-delta-rule call: q|k|v rows (BF16 values), gates, states of num_slots slots.
struct RuleInputs {
  GdnDims d;
  int64_t T, num_slots;
  std::vector<float> qkv, g, beta, state;
  RuleInputs(const GdnDims& dims, int64_t tokens, int64_t slots, uint32_t seed) : d(dims), T(tokens), num_slots(slots) {
    qkv = gpu_test::random_bf16_values(T * d.conv_dim(), seed, -2.f, 2.f);
    g = gpu_test::random_floats(T * d.num_v_heads, seed + 1, -0.5f, -0.001f);
    beta = gpu_test::random_floats(T * d.num_v_heads, seed + 2, 0.01f, 0.99f);
    state = gpu_test::random_floats(num_slots * d.state_floats(), seed + 3, -0.3f, 0.3f);
  }
};

enum class Prefill { kRecurrent, kChunked };

void run_prefill(Prefill algo, const bf16* qkv, const GdnDims& d, int64_t C, const float* g, const float* beta,
                 float* state, const GdnVarlenBatch& batch, bf16* out) {
  const int64_t K = d.key_dim();
  if (algo == Prefill::kRecurrent) {
    cuda::gated_delta_rule_prefill_recurrent(qkv, qkv + K, qkv + 2 * K, C, g, beta, state, batch, d, out, nullptr);
    return;
  }
  const size_t ws_bytes = cuda::gated_delta_rule_prefill_workspace_bytes(batch.num_tokens, batch.num_seqs, d);
  DeviceBuffer<uint8_t> ws(ws_bytes);  // poisoned: every slot the scan reads must have been written
  cuda::gated_delta_rule_prefill_chunked(qkv, qkv + K, qkv + 2 * K, C, g, beta, state, batch, d, ws.get(), ws_bytes,
                                         out, nullptr);
  gpu_test::cuda_or_throw(cudaDeviceSynchronize(), "chunked prefill");
}

void check_prefill(const GdnDims& d, const std::vector<int32_t>& lengths, Prefill algo) {
  const Batch batch = make_batch(lengths);
  RuleInputs in(d, batch.num_tokens(), batch.num_seqs() + 1, 40);
  const int64_t C = d.conv_dim(), K = d.key_dim(), T = in.T;
  auto state_ref = in.state;
  std::vector<float> out_ref(T * d.value_dim());
  cpu::gated_delta_rule_prefill(in.qkv.data(), in.qkv.data() + K, in.qkv.data() + 2 * K, C, in.g.data(), in.beta.data(),
                                state_ref.data(), batch.view(), d, out_ref.data());

  DeviceBuffer<bf16> d_qkv(gpu_test::to_bf16(in.qkv)), d_out(T * d.value_dim());
  DeviceBuffer<float> d_g(in.g), d_beta(in.beta), d_state(in.state);
  DeviceBatch d_batch(batch);
  run_prefill(algo, d_qkv.get(), d, C, d_g.get(), d_beta.get(), d_state.get(), d_batch.view, d_out.get());
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_out.download()), out_ref, 2e-2f, 2e-2f), "");
  // The chunked form multiplies BF16 operands (the state, U, W, as FLA does) with fp32 accumulation:
  // its final state is a few BF16 roundings (2^-9 each) from the fp32 recurrence.
  const float state_tol = algo == Prefill::kChunked ? 5e-3f : 2e-3f;
  EXPECT_EQ(gpu_test::compare(d_state.download(), state_ref, state_tol, state_tol), "");
}

TEST(GatedDeltaRuleGpu, RecurrentPrefillVarlenPublishedShapes) {
  for (const auto& nd : gpu_test::published_rank_dims()) {
    SCOPED_TRACE(nd.name);
    check_prefill(nd.dims, {1, 0, 65, 2, 130}, Prefill::kRecurrent);
  }
}

TEST(GatedDeltaRuleGpu, RecurrentPrefillLong) {
  check_prefill({2, 4, 128, 128}, {16384}, Prefill::kRecurrent);
  check_prefill({2, 6, 128, 128}, {4000, 3, 1000}, Prefill::kRecurrent);
}

TEST(GatedDeltaRuleGpu, ChunkedPrefillVarlenPublishedShapes) {
  for (const auto& nd : gpu_test::published_rank_dims()) {
    SCOPED_TRACE(nd.name);
    check_prefill(nd.dims, {1, 0, 65, 64, 2, 130, 63}, Prefill::kChunked);
  }
}

TEST(GatedDeltaRuleGpu, ChunkedPrefillLong) {
  check_prefill({2, 4, 128, 128}, {16384}, Prefill::kChunked);
  check_prefill({2, 6, 128, 128}, {4000, 3, 1000}, Prefill::kChunked);
}

void check_decode(const GdnDims& d, int64_t B) {
  RuleInputs in(d, B, B + 3, 50);
  std::vector<int32_t> slots(B);
  for (int64_t i = 0; i < B; ++i) slots[i] = int32_t((i * 5 + 2) % (B + 3));  // distinct when gcd(5, B+3) = 1
  const int64_t C = d.conv_dim(), K = d.key_dim();
  auto state_ref = in.state;
  std::vector<float> out_ref(B * d.value_dim());
  cpu::gated_delta_rule_decode(in.qkv.data(), in.qkv.data() + K, in.qkv.data() + 2 * K, C, in.g.data(), in.beta.data(),
                               state_ref.data(), slots.data(), B, d, out_ref.data());
  DeviceBuffer<bf16> d_qkv(gpu_test::to_bf16(in.qkv)), d_out(B * d.value_dim());
  DeviceBuffer<float> d_g(in.g), d_beta(in.beta), d_state(in.state);
  DeviceBuffer<int32_t> d_slots(slots);
  cuda::gated_delta_rule_decode(d_qkv.get(), d_qkv.get() + K, d_qkv.get() + 2 * K, C, d_g.get(), d_beta.get(),
                                d_state.get(), d_slots.get(), B, d, d_out.get(), nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_out.download()), out_ref, 1e-2f, 1e-2f), "");
  EXPECT_EQ(gpu_test::compare(d_state.download(), state_ref, 1e-4f, 1e-4f), "");
}

TEST(GatedDeltaRuleGpu, DecodePublishedShapes) {
  for (const auto& nd : gpu_test::published_rank_dims()) {
    for (int64_t B : {1, 8, 64}) {
      SCOPED_TRACE(std::string(nd.name) + " B=" + std::to_string(B));
      check_decode(nd.dims, B);
    }
  }
}

// ---- fused decode ----

// The fused decode against the CPU reference; with fp8_out also its output quantized.
TEST(GdnDecodeGpu, FusedMatchesReferenceOnMergedViews) {
  for (const auto& nd : gpu_test::published_rank_dims()) {
    const GdnDims& d = nd.dims;
    for (int64_t B : {1, 5, 64}) {
      SCOPED_TRACE(std::string(nd.name) + " B=" + std::to_string(B));
      const int64_t W = d.merged_width(), C = d.conv_dim(), Hv = d.num_v_heads, num_slots = B + 1;
      std::vector<int32_t> slots(B);
      for (int64_t i = 0; i < B; ++i) slots[i] = int32_t(B - i);  // slots B..1, 0 stays scratch
      const auto proj = gpu_test::random_bf16_values(B * W, 60, -2.f, 2.f);
      const auto conv_w = gpu_test::random_bf16_values(C * 4, 61);
      const auto A_log = gpu_test::random_floats(Hv, 62, -2.f, 0.5f);
      const auto dt_bias = gpu_test::random_floats(Hv, 63);
      const auto norm_w = gpu_test::random_bf16_values(d.head_v_dim, 64, 0.5f, 1.5f);
      const auto conv0 = gpu_test::random_bf16_values(num_slots * d.conv_state_floats(), 65);
      const auto ssm0 = gpu_test::random_floats(num_slots * d.state_floats(), 66, -0.3f, 0.3f);
      auto conv_ref = conv0, ssm_ref = ssm0;
      std::vector<float> y_ref(B * d.value_dim());
      const GdnDecodeInputs<float> in_ref{proj.data(),
                                          W,
                                          proj.data() + d.z_offset(),
                                          W,
                                          proj.data() + d.b_offset(),
                                          W,
                                          proj.data() + d.a_offset(),
                                          W,
                                          conv_w.data(),
                                          A_log.data(),
                                          dt_bias.data(),
                                          norm_w.data(),
                                          1e-6f};
      cpu::gdn_decode(in_ref, {conv_ref.data(), ssm_ref.data(), slots.data()}, B, d, y_ref.data());

      DeviceBuffer<bf16> d_proj(gpu_test::to_bf16(proj)), d_conv_w(gpu_test::to_bf16(conv_w)),
          d_norm_w(gpu_test::to_bf16(norm_w)), d_y(B * d.value_dim());
      DeviceBuffer<float> d_A(A_log), d_dt(dt_bias), d_conv(conv0), d_ssm(ssm0);
      DeviceBuffer<int32_t> d_slots(slots);
      const GdnDecodeInputs<bf16> in{d_proj.get(),
                                     W,
                                     d_proj.get() + d.z_offset(),
                                     W,
                                     d_proj.get() + d.b_offset(),
                                     W,
                                     d_proj.get() + d.a_offset(),
                                     W,
                                     d_conv_w.get(),
                                     d_A.get(),
                                     d_dt.get(),
                                     d_norm_w.get(),
                                     1e-6f};
      cuda::gdn_decode(in, {d_conv.get(), d_ssm.get(), d_slots.get()}, B, d, d_y.get(), nullptr);
      ASSERT_CUDA(cudaGetLastError());
      ASSERT_CUDA(cudaDeviceSynchronize());
      const auto y = d_y.download();
      EXPECT_EQ(gpu_test::compare(gpu_test::to_float(y), y_ref, 2e-2f, 2e-2f), "");
      EXPECT_EQ(gpu_test::compare(d_conv.download(), conv_ref, 0, 0), "");
      EXPECT_EQ(gpu_test::compare(d_ssm.download(), ssm_ref, 1e-4f, 1e-4f), "");

      // fp8_out, from the same starting state: the same output and state bits, and FP8 rows that are
      // exactly the quantization of that output (one 128-group per value head).
      DeviceBuffer<float> d_conv_fp8(conv0), d_ssm_fp8(ssm0);
      DeviceBuffer<bf16> d_y_fp8(B * d.value_dim());
      testing_util::DeviceFp8Rows fp8(B, d.value_dim());
      const Fp8Rows rows = fp8.rows();
      cuda::gdn_decode(in, {d_conv_fp8.get(), d_ssm_fp8.get(), d_slots.get()}, B, d, d_y_fp8.get(), nullptr, &rows);
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(gpu_test::compare(gpu_test::to_float(d_y_fp8.download()), gpu_test::to_float(y), 0, 0), "");
      EXPECT_EQ(gpu_test::compare(d_ssm_fp8.download(), d_ssm.download(), 0, 0), "");
      EXPECT_TRUE(testing_util::fp8_rows_quantize(fp8, y, d.value_dim()));
      const Fp8Rows no_scales{fp8.codes.get(), nullptr};
      EXPECT_THROW(cuda::gdn_decode(in, {d_conv_fp8.get(), d_ssm_fp8.get(), d_slots.get()}, B, d, d_y_fp8.get(),
                                    nullptr, &no_scales),
                   std::invalid_argument);
    }
  }
}

}  // namespace
}  // namespace ds::kernels
