// The CPU model against Hugging Face transformers (tests/reference/make_fixtures.py): prefill
// logits at every prompt position, 32 greedy steps, chunked prefill and mixed batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "worker/communicator.h"
#include "worker/model/qwen3_5.h"
#include "worker/model/step_inputs.h"
#include "worker/model_runner.h"

namespace ds::worker {
namespace {

constexpr int kPageSize = 4;  // small, so that prompts span several pages
constexpr int kMaxPagesPerSeq = 32;
constexpr int kNumPrompts = 3;
constexpr double kTolerance = 1e-3;

std::string fixture_dir(const std::string& name) { return std::string(DELTASERVE_SOURCE_DIR) + "/tests/data/" + name; }

struct Prompt {
  std::vector<int32_t> input_ids;
  std::vector<float> prefill_logits;  // [T][V]
  std::vector<int32_t> greedy_tokens;
  std::vector<float> greedy_logits;  // [N][V]
};

template <typename T>
std::vector<T> read_tensor(const weights::SafetensorsFile& file, const std::string& name) {
  for (const weights::TensorView& view : file.tensors()) {
    if (view.name != name) continue;
    std::vector<T> out(view.bytes.size() / sizeof(T));
    std::memcpy(out.data(), view.bytes.data(), view.bytes.size());
    return out;
  }
  throw std::runtime_error(file.path() + ": no tensor " + name);
}

std::vector<Prompt> read_prompts(const std::string& name) {
  const weights::SafetensorsFile file(fixture_dir(name) + "/reference.safetensors");
  std::vector<Prompt> prompts;
  for (int p = 0; p < kNumPrompts; ++p) {
    const std::string prefix = "prompt" + std::to_string(p) + ".";
    prompts.push_back(Prompt{read_tensor<int32_t>(file, prefix + "input_ids"),
                             read_tensor<float>(file, prefix + "prefill_logits"),
                             read_tensor<int32_t>(file, prefix + "greedy_tokens"),
                             read_tensor<float>(file, prefix + "greedy_logits")});
  }
  return prompts;
}

// max |a − b| / max |b| over one row of logits.
double relative_error(const float* actual, const float* expected, int64_t vocab) {
  double diff = 0;
  double scale = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(actual[i] - expected[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(expected[i])));
  }
  return diff / scale;
}

// Sequence s's pages interleave with the others' (page j of s is j·kNumSeqPages + s), so that a
// page table that mixed sequences up would read foreign K/V.
std::vector<int32_t> page_table_of(int seq_index) {
  std::vector<int32_t> pages;
  for (int j = 0; j < kMaxPagesPerSeq; ++j) pages.push_back(j * 8 + seq_index);
  return pages;
}
constexpr int kNumKvPages = kMaxPagesPerSeq * 8;

SequenceStep make_step(int seq_index, int start_pos, std::vector<int32_t> tokens, bool sample) {
  SequenceStep step;
  step.seq_id = 100 + seq_index;
  step.gdn_slot = 1 + seq_index;
  step.reset_slot = start_pos == 0;
  step.start_pos = start_pos;
  step.tokens = std::move(tokens);
  step.page_table = page_table_of(seq_index);
  step.sample = sample;
  step.sample_index = 0;
  return step;
}

// A sequence driven like the scheduler would: the prompt in chunks of `chunk` tokens, then one
// decode token per step until `steps` tokens were generated.
struct Driver {
  int seq_index = 0;
  std::vector<int32_t> prompt;
  int chunk = 0;
  int steps = 0;
  int position = 0;
  std::vector<int32_t> generated;
  std::vector<std::vector<float>> logits;  // one row per generated token

  bool done() const { return static_cast<int>(generated.size()) >= steps; }
  SequenceStep next() const {
    if (position < static_cast<int>(prompt.size())) {
      const int n = std::min<int>(chunk, static_cast<int>(prompt.size()) - position);
      const bool last = position + n == static_cast<int>(prompt.size());
      return make_step(seq_index, position, {prompt.begin() + position, prompt.begin() + position + n}, last);
    }
    return make_step(seq_index, position, {generated.back()}, true);
  }
  void advance(const SequenceStep& step) { position += static_cast<int>(step.tokens.size()); }
};

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
    runner->allocate_pools(kNumKvPages, 8);
    return runner;
  }

  // Runs the drivers together, one step() per round, each round taking every unfinished driver
  // whose start round has come; returns after all are done.
  void run(ModelRunner& runner, std::vector<Driver>& drivers, const std::vector<int>& start_round) const {
    const int vocab = runner.vocab_size();
    for (int round = 0;; ++round) {
      std::vector<SequenceStep> batch;
      std::vector<Driver*> in_batch;
      for (size_t d = 0; d < drivers.size(); ++d) {
        if (drivers[d].done() || round < start_round[d]) continue;
        batch.push_back(drivers[d].next());
        in_batch.push_back(&drivers[d]);
      }
      if (batch.empty()) {
        if (std::all_of(drivers.begin(), drivers.end(), [](const Driver& d) { return d.done(); })) return;
        continue;
      }
      const std::vector<SampledToken> sampled = runner.step(batch);
      size_t next_sample = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        in_batch[i]->advance(batch[i]);
        if (!batch[i].sample) continue;
        ASSERT_LT(next_sample, sampled.size());
        ASSERT_EQ(sampled[next_sample].seq_id, batch[i].seq_id);
        in_batch[i]->generated.push_back(sampled[next_sample].token_id);
        const float* row = runner.last_logits().data() + next_sample * vocab;
        in_batch[i]->logits.emplace_back(row, row + vocab);
        ++next_sample;
      }
      ASSERT_EQ(next_sample, sampled.size());
    }
  }

  // Generated tokens equal transformers' greedy tokens; each step's logits within tolerance.
  void expect_matches_reference(const Driver& driver, const Prompt& prompt, const std::string& what) const {
    const int64_t vocab = static_cast<int64_t>(prompt.prefill_logits.size() / prompt.input_ids.size());
    ASSERT_EQ(driver.generated.size(), static_cast<size_t>(driver.steps)) << what;
    for (int k = 0; k < driver.steps; ++k) {
      ASSERT_EQ(driver.generated[k], prompt.greedy_tokens[k]) << what << ": token " << k;
      EXPECT_LT(relative_error(driver.logits[k].data(), prompt.greedy_logits.data() + k * vocab, vocab), kTolerance)
          << what << ": logits of token " << k;
    }
  }

  std::vector<Prompt> prompts_;
};

// Logits at every prompt position of a one-shot prefill (the model's all-rows hook).
TEST_P(ModelFixtureTest, PrefillLogitsMatchTransformersAtEveryPosition) {
  const weights::Checkpoint checkpoint = weights::Checkpoint::open(fixture_dir(GetParam()));
  auto comm = make_single_rank_communicator(false);
  ModelOptions options;
  options.config = checkpoint.config();
  options.max_tokens = 64;
  options.kv_page_size = kPageSize;
  options.comm = comm.get();
  for (const auto form : {weights::GdnProjectionForm::kFused, weights::GdnProjectionForm::kSplit}) {
    options.gdn_projection = form;
    auto model = make_cpu_model(options, &checkpoint, 0);
    model->allocate_pools(kNumKvPages, 4);
    for (int p = 0; p < kNumPrompts; ++p) {
      const Prompt& prompt = prompts_[p];
      const StepInputs in = build_step_inputs({make_step(0, 0, prompt.input_ids, false)}, kPageSize, kNumKvPages, 4,
                                              model->config().vocab_size);
      std::vector<int32_t> rows(in.num_tokens);
      for (int t = 0; t < in.num_tokens; ++t) rows[t] = t;
      std::vector<float> logits;
      model->forward(in, rows, logits);
      const int64_t vocab = model->config().vocab_size;
      ASSERT_EQ(logits.size(), prompt.prefill_logits.size());
      for (int t = 0; t < in.num_tokens; ++t) {
        EXPECT_LT(relative_error(logits.data() + t * vocab, prompt.prefill_logits.data() + t * vocab, vocab),
                  kTolerance)
            << "prompt " << p << " position " << t
            << (form == weights::GdnProjectionForm::kFused ? " (fused)" : " (split)");
      }
    }
  }
}

TEST_P(ModelFixtureTest, GreedyDecodeMatchesTransformersFor32Steps) {
  auto runner = make_runner();
  for (int p = 0; p < kNumPrompts; ++p) {
    std::vector<Driver> drivers{{.seq_index = p, .prompt = prompts_[p].input_ids, .chunk = 1 << 20, .steps = 32}};
    run(*runner, drivers, {0});
    expect_matches_reference(drivers[0], prompts_[p], "prompt " + std::to_string(p));
  }
}

TEST_P(ModelFixtureTest, ChunkedPrefillMatchesOneShot) {
  auto runner = make_runner();
  for (int chunk : {1, 3, 7}) {
    std::vector<Driver> drivers{{.seq_index = 2, .prompt = prompts_[2].input_ids, .chunk = chunk, .steps = 8}};
    run(*runner, drivers, {0});
    expect_matches_reference(drivers[0], prompts_[2], "chunk " + std::to_string(chunk));
  }
}

// Three sequences with different chunk sizes, started at different rounds, so that steps mix
// prefill chunks (starting and continuing) with decodes of the others.
TEST_P(ModelFixtureTest, MixedBatchMatchesEachSequenceAlone) {
  auto runner = make_runner();
  std::vector<Driver> drivers;
  const int chunks[kNumPrompts] = {5, 3, 11};
  for (int p = 0; p < kNumPrompts; ++p) {
    drivers.push_back({.seq_index = p, .prompt = prompts_[p].input_ids, .chunk = chunks[p], .steps = 16});
  }
  run(*runner, drivers, {0, 2, 1});
  for (int p = 0; p < kNumPrompts; ++p) {
    expect_matches_reference(drivers[p], prompts_[p], "mixed batch, prompt " + std::to_string(p));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFixtureTest, ::testing::Values("qwen3_5_dense", "qwen3_5_moe", "qwen3_next"));

}  // namespace
}  // namespace ds::worker
