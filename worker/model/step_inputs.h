// The flat, per-token description of one step that every layer reads: which tokens run, at which
// positions, for which sequence, where their K/V go, and which rows produce logits. Built once on
// the host from the StepPlan's SequenceSteps, then uploaded as is by device backends.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model_runner.h"

namespace ds::worker {

// Sequences are reordered: decodes (one token continuing a sequence) first, then prefill chunks,
// so that each group is one contiguous block of token rows for the decode and prefill kernels.
// `order` maps back to the batch.
struct StepInputs {
  int num_tokens = 0;     // T: all tokens of the step, sequences back to back
  int num_seqs = 0;       // S
  int num_decodes = 0;    // the first num_decodes sequences (and token rows) are decodes
  std::vector<int32_t> order;       // [S] batch index of each sequence
  std::vector<int32_t> token_ids;   // [T]
  std::vector<int32_t> positions;   // [T] absolute position of each token in its sequence
  std::vector<int32_t> cu_seqlens;  // [S+1] token offsets of the sequences
  std::vector<int32_t> prefill_cu_seqlens;  // [S-num_decodes+1] the prefill group's, from row num_decodes
  std::vector<int32_t> start_pos;   // [S] position of each sequence's first token this step
  std::vector<int32_t> context_lens;  // [S] start_pos + tokens: KV length after this step
  std::vector<int32_t> gdn_slots;   // [S] GDN state slot of each sequence
  std::vector<int32_t> reset_slots;  // slots to zero before the forward
  // Page tables padded to the longest: sequence s's page j is page_table[s * max_pages_per_seq + j]
  // (the layout of kernels/attention.h); padding entries are 0 and never read.
  int max_pages_per_seq = 0;
  std::vector<int32_t> page_table;  // [S][max_pages_per_seq]
  int max_q_len = 0;    // longest chunk this step
  int max_kv_len = 0;   // longest context after this step
  std::vector<int32_t> sample_rows;  // token rows whose logits are needed, in batch order
  std::vector<int32_t> sample_seqs;  // the batch index of each sampling sequence (increasing)
};

// Validates the batch (throws std::invalid_argument naming the sequence and the problem) and
// flattens it. `num_kv_pages` and `num_gdn_slots` are the pool sizes the ids must fall in.
StepInputs build_step_inputs(const std::vector<SequenceStep>& batch, int kv_page_size, int num_kv_pages,
                             int num_gdn_slots, int64_t vocab_size);

// The KV length a decode step replayed from a CUDA graph lays its attention out for: max_kv_len
// rounded up to a multiple of an eighth of its power of two (in whole pages, at least 256 tokens).
// One graph then serves a range of contexts, splitting keys as for at most a quarter more than the
// longest, and a growing sequence's graph is recaptured every eighth of an octave.
int graph_kv_len(int max_kv_len, int kv_page_size);
// `in` with max_kv_len = graph_kv_len and the page tables at that many pages per sequence (padding
// 0, never read), so that every step of a graph's shape launches the same grids.
StepInputs at_graph_kv_len(const StepInputs& in, int kv_page_size);

}  // namespace ds::worker
