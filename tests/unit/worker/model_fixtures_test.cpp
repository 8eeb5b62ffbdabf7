// The CPU model against Hugging Face transformers (tests/reference/make_fixtures.py): prefill
// logits at every prompt position (fused and split GDN projection), 32 greedy steps, chunked
// prefill (chunks of 1, 3, 7) and a batch mixing prefill chunks and decodes of several sequences.
#include <gtest/gtest.h>

#include <algorithm>
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

constexpr double kTolerance = 1e-3;

class ModelFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { prompts_ = read_prompts(GetParam()); }

  std::unique_ptr<ModelRunner> make_runner() const {
    RunnerOptions options;
    options.model_dir = fixture_dir(GetParam());
    options.device = "cpu";
    options.kv_page_size = kPageSize;
    options.max_num_batched_tokens = 256;
    auto runner = ModelRunner::create(options);
    runner->allocate_pools(kNumKvPages, kMaxSeqs + 1);
    return runner;
  }

  std::vector<Prompt> prompts_;
};

// Logits at every prompt position of a one-shot prefill (the model's all-rows hook).
TEST_P(ModelFixtureTest, PrefillLogitsMatchTransformersAtEveryPosition) {
  const weights::Checkpoint checkpoint = weights::Checkpoint::open(fixture_dir(GetParam()));
  auto comm = make_single_rank_communicator(false);
  double worst = 0;
  for (const auto form : {weights::GdnProjectionForm::kFused, weights::GdnProjectionForm::kSplit}) {
    const char* form_name = form == weights::GdnProjectionForm::kFused ? "fused" : "split";
    auto model = make_cpu_model(fixture_model_options(checkpoint, form, comm.get()), &checkpoint, 0);
    model->allocate_pools(kNumKvPages, kMaxSeqs + 1);
    for (int p = 0; p < kNumPrompts; ++p) {
      const Prompt& prompt = prompts_[p];
      const std::vector<float> logits = prefill_all_positions(*model, prompt.input_ids);
      ASSERT_EQ(logits.size(), prompt.prefill_logits.size());
      for (size_t t = 0; t < prompt.input_ids.size(); ++t) {
        const double err = relative_error(logits.data() + t * prompt.vocab(),
                                          prompt.prefill_logits.data() + t * prompt.vocab(), prompt.vocab());
        worst = std::max(worst, err);
        EXPECT_LT(err, kTolerance) << "prompt " << p << " position " << t << " (" << form_name << ")";
      }
    }
  }
  std::printf("%s: prefill logits max relative error vs transformers %.2e\n", GetParam().c_str(), worst);
}

TEST_P(ModelFixtureTest, GreedyDecodeMatchesTransformersFor32Steps) {
  auto runner = make_runner();
  for (int p = 0; p < kNumPrompts; ++p) {
    std::vector<Driver> drivers{make_driver(p, prompts_[p].input_ids, 1 << 20, 32)};
    run_drivers(*runner, drivers, {0});
    expect_matches_reference(drivers[0], prompts_[p], 32, kTolerance, "prompt " + std::to_string(p));
  }
}

TEST_P(ModelFixtureTest, ChunkedPrefillMatchesOneShot) {
  auto runner = make_runner();
  for (int chunk : {1, 3, 7}) {
    std::vector<Driver> drivers{make_driver(2, prompts_[2].input_ids, chunk, 8)};
    run_drivers(*runner, drivers, {0});
    expect_matches_reference(drivers[0], prompts_[2], 8, kTolerance, "chunk " + std::to_string(chunk));
  }
}

// Three sequences with different chunk sizes, started at different rounds, so that steps mix
// prefill chunks (starting and continuing) with decodes of the others.
TEST_P(ModelFixtureTest, MixedBatchMatchesEachSequenceAlone) {
  auto runner = make_runner();
  std::vector<Driver> drivers;
  const int chunks[kNumPrompts] = {5, 3, 11};
  for (int p = 0; p < kNumPrompts; ++p) {
    drivers.push_back(make_driver(p, prompts_[p].input_ids, chunks[p], 16));
  }
  run_drivers(*runner, drivers, {0, 2, 1});
  for (int p = 0; p < kNumPrompts; ++p) {
    expect_matches_reference(drivers[p], prompts_[p], 16, kTolerance, "mixed batch, prompt " + std::to_string(p));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFixtureTest, ::testing::Values("qwen3_5_dense", "qwen3_5_moe", "qwen3_next"));

}  // namespace
}  // namespace ds::worker::testing
