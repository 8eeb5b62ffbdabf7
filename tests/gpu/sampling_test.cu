// Sampling on device against the CPU reference: greedy exact, the same tokens for the same
// (seed, step) on both backends, every sampled token inside the reference's kept set, raw logprobs.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/sampling.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;

std::vector<SamplingParams> mixed_params(int64_t rows) {
  std::vector<SamplingParams> params(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    SamplingParams& p = params[size_t(r)];
    p.seed = 1000 + uint64_t(r);
    p.step = uint64_t(r * 7);
    switch (r % 8) {
      case 0: p.temperature = 0.f; break;                     // greedy
      case 1: p.temperature = 1.f; break;                     // plain sampling
      case 2: p.temperature = 0.7f; p.top_k = 50; break;
      case 3: p.temperature = 1.f; p.top_p = 0.9f; break;
      case 4: p.temperature = 0.8f; p.top_k = 20; p.top_p = 0.8f; break;
      case 5: p.temperature = 1.2f; p.min_p = 0.05f; break;
      case 6: p.temperature = 1.f; p.top_k = 1000; p.top_p = 0.95f; p.min_p = 0.01f; break;
      default: p.temperature = 0.5f; p.top_p = 0.5f; break;
    }
  }
  return params;
}

void check_rows(int64_t rows, int64_t vocab, uint32_t seed, bool integer_logits = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 4.f);
  const int64_t ld = vocab + 5;
  std::vector<float> logits(size_t(rows * ld));
  for (auto& v : logits) v = integer_logits ? std::round(dist(rng)) : dist(rng);  // ties at every threshold
  const auto params = mixed_params(rows);

  DeviceBuffer<float> d_logits(logits), d_logprobs(static_cast<size_t>(rows));
  DeviceBuffer<SamplingParams> d_params(params);
  DeviceBuffer<int32_t> d_tokens(static_cast<size_t>(rows));
  cuda::sample(d_logits.get(), ld, rows, vocab, d_params.get(), d_tokens.get(), d_logprobs.get(), nullptr);
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto tokens = d_tokens.download();
  const auto logprobs = d_logprobs.download();

  std::vector<int32_t> want_tokens(static_cast<size_t>(rows));
  std::vector<float> want_logprobs(static_cast<size_t>(rows));
  cpu::sample(logits.data(), ld, rows, vocab, params.data(), want_tokens.data(), want_logprobs.data());
  int mismatches = 0;
  std::vector<uint8_t> mask(static_cast<size_t>(vocab));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * ld;
    cpu::kept_mask(row, vocab, params[size_t(r)], mask.data());
    ASSERT_GE(tokens[size_t(r)], 0);
    ASSERT_LT(tokens[size_t(r)], vocab);
    EXPECT_TRUE(mask[size_t(tokens[size_t(r)])]) << "row " << r << " sampled a filtered token";
    if (params[size_t(r)].temperature <= 0.f) EXPECT_EQ(tokens[size_t(r)], want_tokens[size_t(r)]) << "greedy row " << r;
    mismatches += tokens[size_t(r)] != want_tokens[size_t(r)];
    // The logprob is of the token the GPU chose, from the raw logits.
    double mx = row[0], sum = 0;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max<double>(mx, row[i]);
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - mx);
    EXPECT_NEAR(logprobs[size_t(r)], row[tokens[size_t(r)]] - mx - std::log(sum), 1e-3) << "row " << r;
  }
  // Same uniforms on both backends: only float rounding at a threshold can make them differ.
  EXPECT_LE(mismatches, int(rows / 32)) << mismatches << " of " << rows << " rows differ from the CPU";

  // Reproducible: a second run gives the same tokens.
  d_tokens.poison();
  cuda::sample(d_logits.get(), ld, rows, vocab, d_params.get(), d_tokens.get(), nullptr, nullptr);
  EXPECT_EQ(d_tokens.download(), tokens);
}

TEST(GpuSampling, SmallVocab) { check_rows(64, 1000, 1); }

TEST(GpuSampling, QwenVocab248320) { check_rows(32, 248320, 2); }

TEST(GpuSampling, TiedLogitsKeepWholeTies) { check_rows(64, 30000, 8, true); }

TEST(GpuSampling, TopKOfOneEqualsGreedy) {
  const int64_t vocab = 5000;
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& v : logits) v = dist(rng);
  SamplingParams p;
  p.top_k = 1;
  p.seed = 5;
  DeviceBuffer<float> d_logits(logits);
  DeviceBuffer<SamplingParams> d_params(std::vector<SamplingParams>{p});
  DeviceBuffer<int32_t> d_tokens(1);
  cuda::sample(d_logits.get(), vocab, 1, vocab, d_params.get(), d_tokens.get(), nullptr, nullptr);
  EXPECT_EQ(d_tokens.download()[0], int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
}

}  // namespace
}  // namespace ds::kernels
