// Turns the control plane's StepPlans into ModelRunner batches. A plan carries only what changed
// (new KV pages, the sampling config the first time a sequence appears, releases); the decoder
// keeps each live sequence's page table, sampling config and next position, so every
// SequenceStep it returns is complete. It also checks the plan, because a front-end
// bookkeeping slip would otherwise turn into silent garbage (wrong cache pages, stale state):
// any inconsistency throws std::invalid_argument naming the step and the sequence. After a
// throw the decoder must not be used again (the worker reports the error and exits).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "proto/worker.pb.h"
#include "worker/model_runner.h"

namespace ds::worker {

class PlanDecoder {
 public:
  // vocab_size 0 leaves token ids unchecked.
  PlanDecoder(int kv_page_size, int vocab_size);

  // Applies the plan's releases, then returns one SequenceStep per scheduled sequence, in plan order.
  std::vector<SequenceStep> decode(const deltaserve::worker::v1::StepPlan& plan);

  size_t live_sequences() const { return sequences_.size(); }

 private:
  struct Cached {
    std::vector<int32_t> page_table;
    bool has_sampling = false;
    SamplingConfig sampling;
    int64_t next_pos = 0;  // where the next chunk must start (unless it resets the slot)
  };

  SequenceStep decode_chunk(uint64_t step_id, const deltaserve::worker::v1::SequenceChunk& chunk);

  int kv_page_size_;
  int vocab_size_;
  std::unordered_map<uint64_t, Cached> sequences_;
};

}  // namespace ds::worker
