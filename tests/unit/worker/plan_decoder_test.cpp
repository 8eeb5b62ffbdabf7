// PlanDecoder: cached per-sequence state (page tables, sampling) and the plan checks.
#include "worker/process/plan_decoder.h"

#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>

namespace ds::worker {
namespace {

namespace pb = deltaserve::worker::v1;

pb::SequenceChunk* add_chunk(pb::StepPlan& plan, uint64_t seq, uint32_t slot, bool reset, uint32_t start,
                             std::initializer_list<uint32_t> tokens, std::initializer_list<uint32_t> pages, bool sample) {
  auto* c = plan.add_sequences();
  c->set_seq_id(seq);
  c->set_gdn_slot(slot);
  c->set_reset_slot(reset);
  c->set_start_pos(start);
  for (auto t : tokens) c->add_token_ids(t);
  for (auto p : pages) c->add_new_kv_pages(p);
  c->set_sample(sample);
  return c;
}

void set_sampling(pb::SequenceChunk* c, float temperature, uint64_t seed) {
  c->mutable_sampling()->set_temperature(temperature);
  c->mutable_sampling()->set_top_p(0.9f);
  c->mutable_sampling()->set_top_k(40);
  c->mutable_sampling()->set_min_p(0.05f);
  c->mutable_sampling()->set_seed(seed);
  c->mutable_sampling()->set_logprobs(true);
}

std::string error_of(PlanDecoder& decoder, const pb::StepPlan& plan) {
  try {
    decoder.decode(plan);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(PlanDecoder, PageTablesGrowAndSamplingIsRememberedAcrossSteps) {
  PlanDecoder decoder(/*kv_page_size=*/4, /*vocab_size=*/100);
  pb::StepPlan prefill;
  prefill.set_step_id(1);
  set_sampling(add_chunk(prefill, 7, 3, true, 0, {1, 2, 3, 4, 5}, {10, 11}, true), 0.7f, 42);
  add_chunk(prefill, 8, 4, true, 0, {9, 9, 9}, {12}, false);  // first chunk of a longer prompt
  auto batch = decoder.decode(prefill);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].seq_id, 7u);
  EXPECT_EQ(batch[0].gdn_slot, 3);
  EXPECT_TRUE(batch[0].reset_slot);
  EXPECT_EQ(batch[0].tokens, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(batch[0].page_table, (std::vector<int32_t>{10, 11}));
  EXPECT_TRUE(batch[0].sample);
  EXPECT_FLOAT_EQ(batch[0].sampling.temperature, 0.7f);
  EXPECT_EQ(batch[0].sampling.top_k, 40);
  EXPECT_EQ(batch[0].sampling.seed, 42u);
  EXPECT_TRUE(batch[0].sampling.logprobs);
  EXPECT_FALSE(batch[1].sample);

  pb::StepPlan next;
  next.set_step_id(2);
  auto* decode = add_chunk(next, 7, 3, false, 5, {55}, {}, true);  // no sampling: cached
  decode->set_sample_index(1);
  auto* rest = add_chunk(next, 8, 4, false, 3, {9, 9}, {13}, true);
  set_sampling(rest, 0.f, 0);  // the prompt's last chunk brings the sampling config
  batch = decoder.decode(next);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_FALSE(batch[0].reset_slot);
  EXPECT_EQ(batch[0].start_pos, 5);
  EXPECT_EQ(batch[0].page_table, (std::vector<int32_t>{10, 11}));
  EXPECT_FLOAT_EQ(batch[0].sampling.temperature, 0.7f);
  EXPECT_EQ(batch[0].sample_index, 1u);
  EXPECT_EQ(batch[1].page_table, (std::vector<int32_t>{12, 13}));
  EXPECT_TRUE(batch[1].sample);
  EXPECT_EQ(decoder.live_sequences(), 2u);
}

TEST(PlanDecoder, ReleaseForgetsAndARecomputedSequenceStartsFresh) {
  PlanDecoder decoder(4, 0);
  pb::StepPlan first;
  first.set_step_id(1);
  set_sampling(add_chunk(first, 1, 1, true, 0, {1, 2}, {5}, true), 0.f, 0);
  decoder.decode(first);

  pb::StepPlan release_only;  // a plan may carry releases only
  release_only.set_step_id(2);
  release_only.add_released_seq_ids(1);
  EXPECT_TRUE(decoder.decode(release_only).empty());
  EXPECT_EQ(decoder.live_sequences(), 0u);

  pb::StepPlan again;  // recompute: reset slot, fresh pages and sampling
  again.set_step_id(3);
  add_chunk(again, 1, 2, true, 0, {1, 2, 3}, {6}, false);
  auto batch = decoder.decode(again);
  EXPECT_EQ(batch[0].page_table, (std::vector<int32_t>{6}));

  pb::StepPlan sample_without_config;
  sample_without_config.set_step_id(4);
  add_chunk(sample_without_config, 1, 2, false, 3, {4}, {}, true);
  EXPECT_NE(error_of(decoder, sample_without_config).find("sampling config was never sent"), std::string::npos);
}

TEST(PlanDecoder, RejectsInconsistentPlansWithTheStepAndSequence) {
  struct Case {
    const char* name;
    std::function<void(pb::StepPlan&)> build;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"first chunk without reset", [](auto& p) { add_chunk(p, 1, 1, false, 0, {1}, {1}, false); }, "must reset its GDN slot"},
      {"scratch slot", [](auto& p) { add_chunk(p, 1, 0, true, 0, {1}, {1}, false); }, "scratch slot"},
      {"no tokens", [](auto& p) { add_chunk(p, 1, 1, true, 0, {}, {1}, false); }, "no tokens"},
      {"pages short", [](auto& p) { add_chunk(p, 1, 1, true, 0, {1, 2, 3, 4, 5}, {1}, false); }, "need 2 KV pages of 4"},
      {"token outside vocab", [](auto& p) { add_chunk(p, 1, 1, true, 0, {100}, {1}, false); }, "outside the vocabulary of 100"},
      {"reset at nonzero", [](auto& p) { add_chunk(p, 1, 1, true, 3, {1}, {1}, false); }, "a reset slot starts at 0"},
      {"twice in a plan",
       [](auto& p) {
         add_chunk(p, 1, 1, true, 0, {1}, {1}, false);
         add_chunk(p, 1, 2, true, 0, {1}, {2}, false);
       },
       "scheduled twice"},
      {"release unknown", [](auto& p) { p.add_released_seq_ids(99); }, "released but not live"},
      {"release and schedule",
       [](auto& p) {
         add_chunk(p, 1, 1, true, 0, {1}, {1}, false);
         p.add_released_seq_ids(1);
       },
       "released and scheduled"},
  };
  for (const auto& c : cases) {
    PlanDecoder decoder(4, 100);
    pb::StepPlan plan;
    plan.set_step_id(17);
    c.build(plan);
    const std::string error = error_of(decoder, plan);
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.name << ": got '" << error << "'";
    EXPECT_NE(error.find("StepPlan 17, seq "), std::string::npos) << c.name << ": got '" << error << "'";
  }
}

TEST(PlanDecoder, AChunkMustContinueWhereTheSequenceStopped) {
  PlanDecoder decoder(4, 0);
  pb::StepPlan first;
  first.set_step_id(1);
  add_chunk(first, 1, 1, true, 0, {1, 2, 3}, {1}, false);
  decoder.decode(first);
  pb::StepPlan gap;
  gap.set_step_id(2);
  add_chunk(gap, 1, 1, false, 4, {4}, {2}, false);
  EXPECT_NE(error_of(decoder, gap).find("starts at position 4 but the sequence continues at 3"), std::string::npos);
}

TEST(PlanDecoder, RefusesANonPositivePageSize) { EXPECT_THROW(PlanDecoder(0, 10), std::invalid_argument); }

}  // namespace
}  // namespace ds::worker
