// ModelRunner::create on the embedded default (`tiny` preset, dummy weights, CPU): the memory
// report, pool sizing refusals, option errors, and the step contract on real-size vocab: chunked
// prefill == one-shot, a batch == each sequence alone, sampled tokens returned in batch order.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tests/unit/worker/model_fixture_util.h"
#include "weights/model_config.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {
namespace {

RunnerOptions tiny_options() {
  RunnerOptions options;
  options.preset = "tiny";
  options.dummy_weights = true;
  options.seed = 7;
  options.device = "cpu";
  options.kv_page_size = kPageSize;
  options.max_num_batched_tokens = 64;
  return options;
}

std::vector<int32_t> prompt_of(int length, int salt) {
  std::vector<int32_t> ids;
  for (int i = 0; i < length; ++i) ids.push_back((i * 7919 + salt * 104729) % 150000);
  return ids;
}

class TinyRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runner_ = ModelRunner::create(tiny_options()).release();
    runner_->allocate_pools(kNumKvPages, kMaxSeqs + 1);
  }
  static void TearDownTestSuite() { delete runner_; }
  static ModelRunner* runner_;
};
ModelRunner* TinyRunnerTest::runner_ = nullptr;

TEST_F(TinyRunnerTest, MemoryReportCountsThePoolsOfTheTinyPreset) {
  const weights::ModelConfig config = weights::preset_config("tiny");
  const MemoryReport report = runner_->memory_report();
  EXPECT_GT(report.weight_bytes, uint64_t(config.vocab_size * config.hidden_size * 4));
  const int attention_layers = config.num_layers_of(weights::LayerType::kFullAttention);
  const int gdn_layers = config.num_layers_of(weights::LayerType::kLinearAttention);
  EXPECT_EQ(report.kv_page_bytes,
            uint64_t(2) * attention_layers * kPageSize * config.num_key_value_heads * config.head_dim * sizeof(float));
  const uint64_t conv_channels = 2 * config.linear_num_key_heads * config.linear_key_head_dim +
                                 config.linear_num_value_heads * config.linear_value_head_dim;
  const uint64_t state = uint64_t(config.linear_num_value_heads) * config.linear_value_head_dim * config.linear_key_head_dim;
  EXPECT_EQ(report.gdn_slot_bytes, gdn_layers * (conv_channels * 3 + state) * sizeof(float));
  EXPECT_GT(report.free_bytes, 0u);
  EXPECT_EQ(runner_->vocab_size(), config.vocab_size);
}

TEST_F(TinyRunnerTest, ChunkedPrefillAndBatchingGiveTheTokensOfOneShotAlone) {
  const std::vector<int32_t> a = prompt_of(13, 1);
  const std::vector<int32_t> b = prompt_of(9, 2);
  std::vector<Driver> alone{make_driver(0, a, 1 << 20, 6)};
  run_drivers(*runner_, alone, {0});
  std::vector<Driver> alone_b{make_driver(1, b, 1 << 20, 6)};
  run_drivers(*runner_, alone_b, {0});

  std::vector<Driver> together{make_driver(0, a, 5, 6), make_driver(1, b, 2, 6)};
  run_drivers(*runner_, together, {1, 0});
  EXPECT_EQ(together[0].generated, alone[0].generated);
  EXPECT_EQ(together[1].generated, alone_b[0].generated);
  for (int k = 0; k < 6; ++k) {
    EXPECT_LT(relative_error(together[0].logits[k].data(), alone[0].logits[k].data(), runner_->vocab_size()), 1e-4);
    EXPECT_LT(relative_error(together[1].logits[k].data(), alone_b[0].logits[k].data(), runner_->vocab_size()), 1e-4);
  }
}

TEST_F(TinyRunnerTest, SampledTokensComeBackInBatchOrderForSamplingSequencesOnly) {
  std::vector<SequenceStep> batch{make_step(2, 0, prompt_of(4, 3), true), make_step(3, 0, prompt_of(6, 4), false),
                                  make_step(4, 0, prompt_of(2, 5), true)};
  batch[2].sampling.temperature = 0.8f;
  batch[2].sampling.seed = 11;
  const std::vector<SampledToken> sampled = runner_->step(batch);
  ASSERT_EQ(sampled.size(), 2u);
  EXPECT_EQ(sampled[0].seq_id, batch[0].seq_id);
  EXPECT_EQ(sampled[1].seq_id, batch[2].seq_id);
  EXPECT_EQ(runner_->last_logits().size(), 2u * runner_->vocab_size());
  EXPECT_LE(sampled[0].logprob, 0.f);
}

TEST_F(TinyRunnerTest, PoolsThatDoNotFitAreRefusedWithTheirSizes) {
  auto runner = ModelRunner::create(tiny_options());
  try {
    runner->allocate_pools(1 << 30, 10);
    FAIL() << "a billion KV pages were accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("KV pages"), std::string::npos) << e.what();
  }
}

TEST(ModelRunnerOptions, BadOptionsAreNamed) {
  RunnerOptions no_weights = tiny_options();
  no_weights.dummy_weights = false;
  EXPECT_THROW(ModelRunner::create(no_weights), std::invalid_argument);
  RunnerOptions bad_device = tiny_options();
  bad_device.device = "gpu0";
  try {
    ModelRunner::create(bad_device);
    FAIL() << "device gpu0 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gpu0"), std::string::npos) << e.what();
  }
  RunnerOptions bad_projection = tiny_options();
  bad_projection.gdn_projection = "both";
  EXPECT_THROW(ModelRunner::create(bad_projection), std::invalid_argument);
}

}  // namespace
}  // namespace ds::worker::testing
