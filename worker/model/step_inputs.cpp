#include "worker/model/step_inputs.h"

#include <algorithm>
#include <bit>
#include <set>
#include <stdexcept>
#include <string>

namespace ds::worker {
namespace {

[[noreturn]] void fail(size_t index, const SequenceStep& seq, const std::string& what) {
  throw std::invalid_argument("step batch entry " + std::to_string(index) + " (seq_id " +
                              std::to_string(seq.seq_id) + "): " + what);
}

void validate(size_t index, const SequenceStep& seq, int kv_page_size, int num_kv_pages, int num_gdn_slots,
              int64_t vocab_size) {
  if (seq.tokens.empty()) fail(index, seq, "no tokens");
  if (seq.start_pos < 0) fail(index, seq, "negative start_pos " + std::to_string(seq.start_pos));
  if (seq.gdn_slot <= 0 || seq.gdn_slot >= num_gdn_slots) {
    fail(index, seq, "gdn_slot " + std::to_string(seq.gdn_slot) + " outside [1, " +
                         std::to_string(num_gdn_slots) + ") (slot 0 is scratch)");
  }
  if (seq.start_pos == 0 && !seq.reset_slot) fail(index, seq, "starts at position 0 without reset_slot");
  const int64_t end = int64_t{seq.start_pos} + static_cast<int64_t>(seq.tokens.size());
  const int64_t pages_needed = (end + kv_page_size - 1) / kv_page_size;
  if (static_cast<int64_t>(seq.page_table.size()) < pages_needed) {
    fail(index, seq, "page_table has " + std::to_string(seq.page_table.size()) + " pages, " +
                         std::to_string(pages_needed) + " needed for " + std::to_string(end) + " tokens");
  }
  for (int32_t page : seq.page_table) {
    if (page < 0 || page >= num_kv_pages) {
      fail(index, seq, "KV page " + std::to_string(page) + " outside [0, " + std::to_string(num_kv_pages) + ")");
    }
  }
  for (int32_t token : seq.tokens) {
    if (token < 0 || token >= vocab_size) {
      fail(index, seq, "token id " + std::to_string(token) + " outside the vocabulary of " +
                           std::to_string(vocab_size));
    }
  }
}

bool is_decode(const SequenceStep& seq) { return seq.tokens.size() == 1 && seq.start_pos > 0 && !seq.reset_slot; }

// Decodes first, each group in batch order.
std::vector<int32_t> decode_first_order(const std::vector<SequenceStep>& batch) {
  std::vector<int32_t> order;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (is_decode(batch[i]) == (pass == 0)) order.push_back(static_cast<int32_t>(i));
    }
  }
  return order;
}

}  // namespace

StepInputs build_step_inputs(const std::vector<SequenceStep>& batch, int kv_page_size, int num_kv_pages,
                             int num_gdn_slots, int64_t vocab_size) {
  if (kv_page_size <= 0) throw std::invalid_argument("kv_page_size must be positive");
  StepInputs in;
  in.num_seqs = static_cast<int>(batch.size());
  in.cu_seqlens.push_back(0);
  in.order = decode_first_order(batch);
  std::set<int> slots_in_use;
  std::vector<int32_t> sample_row_of_seq(batch.size(), -1);
  for (int32_t i : in.order) {
    const SequenceStep& seq = batch[i];
    if (is_decode(seq)) ++in.num_decodes;
    validate(i, seq, kv_page_size, num_kv_pages, num_gdn_slots, vocab_size);
    // Two sequences sharing a slot would race on its state within one forward.
    if (!slots_in_use.insert(seq.gdn_slot).second) {
      fail(i, seq, "gdn_slot " + std::to_string(seq.gdn_slot) + " used twice in one step");
    }
    const int n = static_cast<int>(seq.tokens.size());
    for (int t = 0; t < n; ++t) {
      const int pos = seq.start_pos + t;
      in.token_ids.push_back(seq.tokens[t]);
      in.positions.push_back(pos);
    }
    in.cu_seqlens.push_back(in.cu_seqlens.back() + n);
    in.start_pos.push_back(seq.start_pos);
    in.context_lens.push_back(seq.start_pos + n);
    in.gdn_slots.push_back(seq.gdn_slot);
    if (seq.reset_slot) in.reset_slots.push_back(seq.gdn_slot);
    in.max_pages_per_seq = std::max(in.max_pages_per_seq, (seq.start_pos + n + kv_page_size - 1) / kv_page_size);
    in.max_q_len = std::max(in.max_q_len, n);
    in.max_kv_len = std::max(in.max_kv_len, seq.start_pos + n);
    if (seq.sample) sample_row_of_seq[i] = in.cu_seqlens.back() - 1;
  }
  in.num_tokens = static_cast<int>(in.token_ids.size());
  in.page_table.assign(static_cast<size_t>(in.num_seqs) * in.max_pages_per_seq, 0);
  for (int s = 0; s < in.num_seqs; ++s) {
    const SequenceStep& seq = batch[in.order[s]];
    std::copy_n(seq.page_table.begin(), (in.context_lens[s] + kv_page_size - 1) / kv_page_size,
                in.page_table.begin() + static_cast<size_t>(s) * in.max_pages_per_seq);
  }
  for (int s = in.num_decodes; s <= in.num_seqs; ++s) {
    in.prefill_cu_seqlens.push_back(in.cu_seqlens[s] - in.cu_seqlens[in.num_decodes]);
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (sample_row_of_seq[i] < 0) continue;
    in.sample_rows.push_back(sample_row_of_seq[i]);
    in.sample_seqs.push_back(static_cast<int32_t>(i));
  }
  return in;
}

int graph_kv_len(int max_kv_len, int kv_page_size) {
  const auto round_up = [](int v, int m) { return (v + m - 1) / m * m; };
  const int len = std::max(max_kv_len, 256);
  const int granule = round_up(static_cast<int>(std::bit_ceil(static_cast<unsigned>(len))) / 8, kv_page_size);
  return round_up(len, granule);
}

StepInputs at_graph_kv_len(const StepInputs& in, int kv_page_size) {
  StepInputs out = in;
  out.max_kv_len = graph_kv_len(in.max_kv_len, kv_page_size);
  out.max_pages_per_seq = out.max_kv_len / kv_page_size;
  if (in.max_pages_per_seq > out.max_pages_per_seq) {
    throw std::invalid_argument("at_graph_kv_len: page tables of " + std::to_string(in.max_pages_per_seq) +
                                " pages exceed the " + std::to_string(out.max_pages_per_seq) + " of " +
                                std::to_string(out.max_kv_len) + " keys");
  }
  out.page_table.assign(static_cast<size_t>(in.num_seqs) * out.max_pages_per_seq, 0);
  for (int s = 0; s < in.num_seqs; ++s) {
    std::copy_n(in.page_table.begin() + static_cast<size_t>(s) * in.max_pages_per_seq, in.max_pages_per_seq,
                out.page_table.begin() + static_cast<size_t>(s) * out.max_pages_per_seq);
  }
  return out;
}

}  // namespace ds::worker
