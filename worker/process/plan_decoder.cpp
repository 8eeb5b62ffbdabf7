#include "worker/process/plan_decoder.h"

#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace ds::worker {
namespace {

namespace pb = deltaserve::worker::v1;

SamplingConfig from_proto(const pb::SamplingConfig& s) {
  SamplingConfig c;
  c.temperature = s.temperature();
  c.top_p = s.top_p();
  c.top_k = s.top_k();
  c.min_p = s.min_p();
  c.seed = s.seed();
  c.logprobs = s.logprobs();
  return c;
}

[[noreturn]] void reject(uint64_t step_id, uint64_t seq_id, const std::string& problem) {
  throw std::invalid_argument("StepPlan " + std::to_string(step_id) + ", seq " + std::to_string(seq_id) + ": " +
                              problem);
}

}  // namespace

PlanDecoder::PlanDecoder(int kv_page_size, int vocab_size) : kv_page_size_(kv_page_size), vocab_size_(vocab_size) {
  if (kv_page_size <= 0) throw std::invalid_argument("KV page size must be positive, got " + std::to_string(kv_page_size));
}

std::vector<SequenceStep> PlanDecoder::decode(const pb::StepPlan& plan) {
  std::unordered_set<uint64_t> scheduled;
  for (const auto& chunk : plan.sequences()) {
    if (!scheduled.insert(chunk.seq_id()).second) reject(plan.step_id(), chunk.seq_id(), "scheduled twice in one plan");
  }
  for (uint64_t seq_id : plan.released_seq_ids()) {
    if (scheduled.count(seq_id)) reject(plan.step_id(), seq_id, "released and scheduled in the same plan");
    if (sequences_.erase(seq_id) == 0) reject(plan.step_id(), seq_id, "released but not live (never scheduled or released twice)");
  }
  std::vector<SequenceStep> batch;
  batch.reserve(plan.sequences_size());
  for (const auto& chunk : plan.sequences()) batch.push_back(decode_chunk(plan.step_id(), chunk));
  return batch;
}

SequenceStep PlanDecoder::decode_chunk(uint64_t step_id, const pb::SequenceChunk& chunk) {
  const uint64_t seq_id = chunk.seq_id();
  const bool is_new = !sequences_.count(seq_id);
  if (is_new && !chunk.reset_slot()) reject(step_id, seq_id, "first chunk of a sequence must reset its GDN slot");
  Cached& cached = sequences_[seq_id];

  if (chunk.token_ids().empty()) reject(step_id, seq_id, "no tokens");
  if (chunk.gdn_slot() == 0) reject(step_id, seq_id, "GDN slot 0 is the scratch slot");
  if (chunk.gdn_slot() > uint32_t(std::numeric_limits<int>::max())) reject(step_id, seq_id, "GDN slot out of range");
  const int64_t expected_pos = chunk.reset_slot() ? 0 : cached.next_pos;
  if (int64_t(chunk.start_pos()) != expected_pos) {
    reject(step_id, seq_id, "chunk starts at position " + std::to_string(chunk.start_pos()) + " but the sequence continues at " +
                                std::to_string(expected_pos) + (chunk.reset_slot() ? " (a reset slot starts at 0)" : ""));
  }
  for (uint32_t page : chunk.new_kv_pages()) {
    if (page > uint32_t(std::numeric_limits<int32_t>::max())) reject(step_id, seq_id, "KV page id out of range");
    cached.page_table.push_back(int32_t(page));
  }
  const int64_t end_pos = int64_t(chunk.start_pos()) + chunk.token_ids_size();
  const int64_t covered = int64_t(cached.page_table.size()) * kv_page_size_;
  if (end_pos > covered) {
    reject(step_id, seq_id, "positions up to " + std::to_string(end_pos) + " need " +
                                std::to_string((end_pos + kv_page_size_ - 1) / kv_page_size_) + " KV pages of " +
                                std::to_string(kv_page_size_) + " tokens, the page table has " +
                                std::to_string(cached.page_table.size()));
  }
  if (chunk.has_sampling()) {
    cached.sampling = from_proto(chunk.sampling());
    cached.has_sampling = true;
  }
  if (chunk.sample() && !cached.has_sampling) reject(step_id, seq_id, "samples but its sampling config was never sent");

  SequenceStep step;
  step.seq_id = seq_id;
  step.gdn_slot = int(chunk.gdn_slot());
  step.reset_slot = chunk.reset_slot();
  step.start_pos = int(chunk.start_pos());
  step.tokens.reserve(chunk.token_ids_size());
  for (uint32_t token : chunk.token_ids()) {
    if (vocab_size_ > 0 && token >= uint32_t(vocab_size_)) {
      reject(step_id, seq_id, "token id " + std::to_string(token) + " is outside the vocabulary of " + std::to_string(vocab_size_));
    }
    step.tokens.push_back(int32_t(token));
  }
  step.page_table = cached.page_table;
  step.sample = chunk.sample();
  step.sampling = cached.sampling;
  step.sample_index = chunk.sample_index();
  cached.next_pos = end_pos;
  return step;
}

}  // namespace ds::worker
