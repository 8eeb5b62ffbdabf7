// Shared by the CPU (tests/unit/worker/model_fixtures_test.cpp) and CUDA
// (tests/gpu/model_fixtures_test.cu) model tests: the transformers fixtures of
// tests/reference/make_fixtures.py, and a small driver that runs sequences through
// ModelRunner::step the way the scheduler would (chunked prefill, then decodes, mixed in batches).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "worker/model/qwen3_5.h"
#include "worker/model/step_inputs.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {

inline constexpr int kPageSize = 4;  // small, so that prompts span several pages
inline constexpr int kMaxPagesPerSeq = 32;
inline constexpr int kMaxSeqs = 8;
inline constexpr int kNumKvPages = kMaxPagesPerSeq * kMaxSeqs;
inline constexpr int kNumPrompts = 3;

inline std::string fixture_dir(const std::string& name) {
  return std::string(DELTASERVE_SOURCE_DIR) + "/tests/data/" + name;
}

struct Prompt {
  std::vector<int32_t> input_ids;
  std::vector<float> prefill_logits;  // [T][V]
  std::vector<int32_t> greedy_tokens;
  std::vector<float> greedy_logits;  // [N][V]
  int64_t vocab() const { return static_cast<int64_t>(prefill_logits.size() / input_ids.size()); }
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

inline std::vector<Prompt> read_prompts(const std::string& name) {
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
inline double relative_error(const float* actual, const float* expected, int64_t vocab) {
  double diff = 0;
  double scale = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(actual[i] - expected[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(expected[i])));
  }
  return diff / scale;
}

// A one-rank model on a fixture checkpoint, with room for the longest prompt plus its greedy tokens.
inline ModelOptions fixture_model_options(const weights::Checkpoint& checkpoint, weights::GdnProjectionForm form,
                                          Communicator* comm) {
  ModelOptions options;
  options.config = checkpoint.config();
  options.max_tokens = 64;
  options.kv_page_size = kPageSize;
  options.gdn_projection = form;
  options.comm = comm;
  return options;
}

// Sequence s's pages interleave with the others' (page j of s is j·kMaxSeqs + s), so that a
// page table that mixed sequences up would read foreign K/V.
inline std::vector<int32_t> page_table_of(int seq_index) {
  std::vector<int32_t> pages;
  for (int j = 0; j < kMaxPagesPerSeq; ++j) pages.push_back(j * kMaxSeqs + seq_index);
  return pages;
}

inline SequenceStep make_step(int seq_index, int start_pos, std::vector<int32_t> tokens, bool sample) {
  SequenceStep step;
  step.seq_id = 100 + seq_index;
  step.gdn_slot = 1 + seq_index;
  step.reset_slot = start_pos == 0;
  step.start_pos = start_pos;
  step.tokens = std::move(tokens);
  step.page_table = page_table_of(seq_index);
  step.sample = sample;
  return step;
}

// Logits at every position of `ids`, prefilled in one step from position 0 as sequence 0, [T·V].
inline std::vector<float> prefill_all_positions(Model& model, const std::vector<int32_t>& ids) {
  const StepInputs in =
      build_step_inputs({make_step(0, 0, ids, false)}, kPageSize, kNumKvPages, kMaxSeqs + 1, model.config().vocab_size);
  std::vector<int32_t> rows(in.num_tokens);
  for (int t = 0; t < in.num_tokens; ++t) rows[t] = t;
  model.forward(in, rows);
  std::vector<float> logits;
  model.copy_logits(logits);
  return logits;
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
    const int prompt_len = static_cast<int>(prompt.size());
    if (position < prompt_len) {
      const int n = std::min(chunk, prompt_len - position);
      return make_step(seq_index, position, {prompt.begin() + position, prompt.begin() + position + n},
                       position + n == prompt_len);
    }
    return make_step(seq_index, position, {generated.back()}, true);
  }
};

inline Driver make_driver(int seq_index, const std::vector<int32_t>& prompt, int chunk, int steps) {
  Driver driver;
  driver.seq_index = seq_index;
  driver.prompt = prompt;
  driver.chunk = chunk;
  driver.steps = steps;
  return driver;
}

// Runs the drivers together, one step() per round, each round taking every unfinished driver
// whose start round has come, until all are done.
inline void run_drivers(ModelRunner& runner, std::vector<Driver>& drivers, const std::vector<int>& start_round) {
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
      in_batch[i]->position += static_cast<int>(batch[i].tokens.size());
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

// The driver's first `exact_steps` tokens equal transformers' greedy tokens, and the logits of each
// step whose prefix agrees are within `tolerance`.
inline void expect_matches_reference(const Driver& driver, const Prompt& prompt, int exact_steps, double tolerance,
                                     const std::string& what) {
  ASSERT_EQ(driver.generated.size(), static_cast<size_t>(driver.steps)) << what;
  for (int k = 0; k < driver.steps; ++k) {
    if (k < exact_steps) {
      ASSERT_EQ(driver.generated[k], prompt.greedy_tokens[k]) << what << ": token " << k;
    } else if (driver.generated[k] != prompt.greedy_tokens[k]) {
      return;  // past the required steps a near tie may diverge; later rows have other prefixes
    }
    EXPECT_LT(relative_error(driver.logits[k].data(), prompt.greedy_logits.data() + k * prompt.vocab(), prompt.vocab()),
              tolerance)
        << what << ": logits of token " << k;
  }
}

}  // namespace ds::worker::testing
