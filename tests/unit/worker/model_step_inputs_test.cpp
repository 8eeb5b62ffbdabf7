// build_step_inputs: decode-first packing, sampling rows in batch order, padded page tables, and
// clear errors for plans the model cannot run.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "worker/model/step_inputs.h"

namespace ds::worker {
namespace {

constexpr int kPageSize = 4;
constexpr int kPages = 16;
constexpr int kSlots = 8;
constexpr int64_t kVocab = 100;

SequenceStep seq(uint64_t id, int slot, int start_pos, std::vector<int32_t> tokens, std::vector<int32_t> pages,
                 bool sample) {
  SequenceStep s;
  s.seq_id = id;
  s.gdn_slot = slot;
  s.reset_slot = start_pos == 0;
  s.start_pos = start_pos;
  s.tokens = std::move(tokens);
  s.page_table = std::move(pages);
  s.sample = sample;
  return s;
}

TEST(ModelStepInputs, PacksDecodesFirstAndKeepsSamplesInBatchOrder) {
  const std::vector<SequenceStep> batch = {
      seq(1, 1, 0, {5, 6, 7, 8, 9}, {3, 4}, true),  // prefill, 5 tokens over 2 pages
      seq(2, 2, 9, {11}, {0, 1, 2}, true),          // decode at position 9
      seq(3, 3, 4, {12, 13}, {7, 8}, false),        // continuing chunk, no sample
      seq(4, 4, 2, {14}, {5}, true),                // decode at position 2
  };
  const StepInputs in = build_step_inputs(batch, kPageSize, kPages, kSlots, kVocab);
  EXPECT_EQ(in.num_seqs, 4);
  EXPECT_EQ(in.num_tokens, 9);
  EXPECT_EQ(in.num_decodes, 2);
  EXPECT_EQ(in.order, (std::vector<int32_t>{1, 3, 0, 2}));
  EXPECT_EQ(in.token_ids, (std::vector<int32_t>{11, 14, 5, 6, 7, 8, 9, 12, 13}));
  EXPECT_EQ(in.positions, (std::vector<int32_t>{9, 2, 0, 1, 2, 3, 4, 4, 5}));
  EXPECT_EQ(in.cu_seqlens, (std::vector<int32_t>{0, 1, 2, 7, 9}));
  EXPECT_EQ(in.prefill_cu_seqlens, (std::vector<int32_t>{0, 5, 7}));
  EXPECT_EQ(in.gdn_slots, (std::vector<int32_t>{2, 4, 1, 3}));
  EXPECT_EQ(in.context_lens, (std::vector<int32_t>{10, 3, 5, 6}));
  EXPECT_EQ(in.reset_slots, (std::vector<int32_t>{1}));
  EXPECT_EQ(in.max_pages_per_seq, 3);
  EXPECT_EQ(in.page_table, (std::vector<int32_t>{0, 1, 2, 5, 0, 0, 3, 4, 0, 7, 8, 0}));
  EXPECT_EQ(in.max_q_len, 5);
  EXPECT_EQ(in.max_kv_len, 10);
  // Sampling sequences in batch order 0, 1, 3 -> their last rows in the packed order.
  EXPECT_EQ(in.sample_seqs, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(in.sample_rows, (std::vector<int32_t>{6, 0, 1}));
}

void expect_rejected(const SequenceStep& bad, const std::string& fragment) {
  try {
    build_step_inputs({seq(9, 5, 0, {1}, {0}, true), bad}, kPageSize, kPages, kSlots, kVocab);
    FAIL() << "accepted a plan with " << fragment;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("seq_id 1"), std::string::npos) << e.what();
  }
}

TEST(ModelStepInputs, RejectsPlansTheModelCannotRun) {
  expect_rejected(seq(1, 0, 0, {1}, {1}, true), "slot 0 is scratch");
  expect_rejected(seq(1, kSlots, 0, {1}, {1}, true), "gdn_slot 8 outside");
  expect_rejected(seq(1, 5, 0, {1}, {1}, true), "used twice");
  expect_rejected(seq(1, 1, 3, {1, 2}, {1}, true), "2 needed");
  expect_rejected(seq(1, 1, 0, {1}, {kPages}, true), "KV page 16 outside");
  expect_rejected(seq(1, 1, 0, {kVocab}, {1}, true), "token id 100");
  expect_rejected(seq(1, 1, 0, {}, {1}, true), "no tokens");
  SequenceStep no_reset = seq(1, 1, 0, {1}, {1}, true);
  no_reset.reset_slot = false;
  expect_rejected(no_reset, "without reset_slot");
}

TEST(ModelStepInputs, GraphKvLenRoundsUpToAnEighthOfTheOctaveInWholePages) {
  EXPECT_EQ(graph_kv_len(1, 64), 256);  // at least 256
  EXPECT_EQ(graph_kv_len(256, 64), 256);
  EXPECT_EQ(graph_kv_len(257, 64), 320);     // octave 512: granule 64
  EXPECT_EQ(graph_kv_len(513, 64), 640);     // octave 1024: granule 128
  EXPECT_EQ(graph_kv_len(8193, 64), 10240);  // octave 16384: granule 2048
  EXPECT_EQ(graph_kv_len(8192, 64), 8192);
  EXPECT_EQ(graph_kv_len(300, 48), 384);  // granule 64 rounded to whole 48-token pages: 96
  for (int len = 1; len <= 70000; len += 37) {
    const int g = graph_kv_len(len, 48);
    ASSERT_GE(g, len);
    ASSERT_EQ(g % 48, 0) << len;
    ASSERT_LE(g, std::max(256, len) * 5 / 4 + 48) << len;  // at most a quarter more, plus page rounding
  }
}

TEST(ModelStepInputs, AtGraphKvLenPadsThePageTablesOnly) {
  const StepInputs in = build_step_inputs({seq(7, 1, 5, {3}, {4, 9}, true), seq(8, 2, 2, {6}, {11}, true)}, kPageSize,
                                          kPages, kSlots, kVocab);
  ASSERT_EQ(in.max_pages_per_seq, 2);
  const StepInputs padded = at_graph_kv_len(in, kPageSize);
  EXPECT_EQ(padded.max_kv_len, 256);
  EXPECT_EQ(padded.max_pages_per_seq, 256 / kPageSize);
  ASSERT_EQ(padded.page_table.size(), size_t(2 * 64));
  EXPECT_EQ(padded.page_table[0], 4);
  EXPECT_EQ(padded.page_table[1], 9);
  EXPECT_EQ(padded.page_table[2], 0);
  EXPECT_EQ(padded.page_table[64], 11);
  EXPECT_EQ(padded.page_table[65], 0);  // the 2-page padding of the unpadded table, then zeros
  EXPECT_EQ(padded.context_lens, in.context_lens);
  EXPECT_EQ(padded.token_ids, in.token_ids);
  EXPECT_EQ(padded.positions, in.positions);
  EXPECT_EQ(padded.gdn_slots, in.gdn_slots);
}

}  // namespace
}  // namespace ds::worker
