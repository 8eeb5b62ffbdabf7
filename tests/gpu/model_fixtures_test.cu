// The CUDA (BF16) model against Hugging Face transformers' fp32 fixtures
// (tests/reference/make_fixtures.py): prefill logits at every position within 2e-2, greedy tokens
// identical for at least 16 of 32 steps, fused == split GDN projection, and a mixed batch of
// chunked prefills and decodes equal to each sequence alone.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tests/unit/worker/model_fixture_util.h"
#include "weights/checkpoint.h"
#include "worker/communicator.h"
#include "worker/model/qwen3_5.h"
#include "worker/model/step_inputs.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {
namespace {

constexpr double kTolerance = 2e-2;
constexpr int kExactGreedySteps = 16;

class CudaModelFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { prompts_ = read_prompts(GetParam()); }

  std::unique_ptr<ModelRunner> make_runner(const std::string& projection) const {
    RunnerOptions options;
    options.model_dir = fixture_dir(GetParam());
    options.device = "cuda:0";
    options.gdn_projection = projection;
    options.kv_page_size = kPageSize;
    options.max_num_batched_tokens = 256;
    auto runner = ModelRunner::create(options);
    runner->allocate_pools(kNumKvPages, kMaxSeqs + 1);
    return runner;
  }

  // All-position prefill logits of every prompt, [prompt][T·V].
  std::vector<std::vector<float>> prefill_logits(weights::GdnProjectionForm form) const {
    const weights::Checkpoint checkpoint = weights::Checkpoint::open(fixture_dir(GetParam()));
    auto comm = make_single_rank_communicator(true);
    ModelOptions options;
    options.config = checkpoint.config();
    options.max_tokens = 64;
    options.kv_page_size = kPageSize;
    options.gdn_projection = form;
    options.comm = comm.get();
    auto model = make_cuda_model(options, &checkpoint, 0);
    model->allocate_pools(kNumKvPages, kMaxSeqs + 1);
    std::vector<std::vector<float>> out;
    for (const Prompt& prompt : prompts_) {
      const StepInputs in = build_step_inputs({make_step(0, 0, prompt.input_ids, false)}, kPageSize, kNumKvPages,
                                              kMaxSeqs + 1, model->config().vocab_size);
      std::vector<int32_t> rows(in.num_tokens);
      for (int t = 0; t < in.num_tokens; ++t) rows[t] = t;
      out.emplace_back();
      model->forward(in, rows);
      model->copy_logits(out.back());
    }
    return out;
  }

  std::vector<Prompt> prompts_;
};

TEST_P(CudaModelFixtureTest, PrefillLogitsMatchTransformersAndFusedEqualsSplit) {
  const auto fused = prefill_logits(weights::GdnProjectionForm::kFused);
  const auto split = prefill_logits(weights::GdnProjectionForm::kSplit);
  double worst = 0;
  double worst_fused_vs_split = 0;
  for (int p = 0; p < kNumPrompts; ++p) {
    const Prompt& prompt = prompts_[p];
    const int64_t V = prompt.vocab();
    ASSERT_EQ(fused[p].size(), prompt.prefill_logits.size());
    for (size_t t = 0; t < prompt.input_ids.size(); ++t) {
      const double err = relative_error(fused[p].data() + t * V, prompt.prefill_logits.data() + t * V, V);
      const double fs = relative_error(split[p].data() + t * V, fused[p].data() + t * V, V);
      worst = std::max(worst, err);
      worst_fused_vs_split = std::max(worst_fused_vs_split, fs);
      EXPECT_LT(err, kTolerance) << "prompt " << p << " position " << t;
      EXPECT_LT(fs, 1e-2) << "split vs fused, prompt " << p << " position " << t;
    }
  }
  std::printf("%s: prefill max relative error vs transformers %.3e; split vs fused %.3e\n", GetParam().c_str(), worst,
              worst_fused_vs_split);
}

TEST_P(CudaModelFixtureTest, GreedyDecodeMatchesTransformersFusedAndSplit) {
  for (const char* projection : {"fused", "split"}) {
    auto runner = make_runner(projection);
    for (int p = 0; p < kNumPrompts; ++p) {
      std::vector<Driver> drivers{make_driver(p, prompts_[p].input_ids, 1 << 20, 32)};
      run_drivers(*runner, drivers, {0});
      int agree = 0;
      while (agree < 32 && drivers[0].generated[agree] == prompts_[p].greedy_tokens[agree]) ++agree;
      std::printf("%s %s prompt %d: greedy tokens identical for %d of 32 steps\n", GetParam().c_str(), projection, p,
                  agree);
      expect_matches_reference(drivers[0], prompts_[p], kExactGreedySteps, kTolerance,
                               std::string(projection) + " prompt " + std::to_string(p));
    }
  }
}

TEST_P(CudaModelFixtureTest, MixedBatchAndChunkedPrefillMatchReference) {
  auto runner = make_runner("fused");
  std::vector<Driver> drivers;
  const int chunks[kNumPrompts] = {1, 3, 7};
  for (int p = 0; p < kNumPrompts; ++p) {
    drivers.push_back(make_driver(p, prompts_[p].input_ids, chunks[p], kExactGreedySteps));
  }
  run_drivers(*runner, drivers, {0, 2, 1});
  for (int p = 0; p < kNumPrompts; ++p) {
    expect_matches_reference(drivers[p], prompts_[p], kExactGreedySteps, kTolerance,
                             "mixed batch, prompt " + std::to_string(p));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModelFixtureTest,
                         ::testing::Values("qwen3_5_dense", "qwen3_5_moe", "qwen3_next"));

}  // namespace
}  // namespace ds::worker::testing
