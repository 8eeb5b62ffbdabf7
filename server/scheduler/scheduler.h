// FCFS continuous batching with chunked prefill (DESIGN.md §1: the front end owns every
// scheduling decision). Each step runs every running decode plus prefill chunks, oldest first,
// within max_num_batched_tokens. A sequence is admitted only with a free GDN slot and KV pages
// for its whole current context; when a decode needs a page and none is free, the newest running
// sequence is preempted: its slot and pages are freed and it is recomputed later (prompt and the
// tokens generated so far are prefilled again into a reset slot), so no request fails for lack of
// pages. Single-threaded: the engine's loop thread owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proto/worker.pb.h"
#include "server/scheduler/page_allocator.h"
#include "server/scheduler/sequence.h"

namespace ds::server {

namespace control = ::deltaserve::worker::v1;  // the front end <-> worker protocol

struct SchedulerConfig {
  int max_running_requests = 256;
  int max_num_batched_tokens = 8192;
  int kv_page_size = 64;
  int num_kv_pages = 0;
  int num_gdn_slots = 0;  // including the scratch slot 0
  int max_context_len = 0;  // prompt + generated tokens; at most num_kv_pages * kv_page_size
  std::vector<int32_t> eos_token_ids;
};

// One sampled token as apply() hands it to the engine; `finish` is set when it ended the sequence.
struct TokenUpdate {
  uint64_t seq_id = 0;
  int32_t token_id = 0;
  float logprob = 0.f;
  std::optional<FinishReason> finish;
};

class Scheduler {
 public:
  // Throws std::invalid_argument for inconsistent limits.
  explicit Scheduler(SchedulerConfig config);

  // Queues a sequence. Throws std::invalid_argument when it can never run: empty prompt, no room
  // for a generated token within max_context_len, a duplicate id, or max_tokens < 1.
  void add(Sequence seq);
  // The next step's plan; nullopt when there is nothing to run and nothing to release.
  std::optional<control::StepPlan> schedule();
  // Applies rank 0's result for the last plan. Finished sequences are freed at once.
  // Throws std::runtime_error when the result does not match the plan (a broken worker).
  std::vector<TokenUpdate> apply(const control::StepResult& result);
  // Ends a sequence now (abort, disconnect, stop string, failure), freeing its slot and pages.
  // False when the id is unknown (already finished).
  bool finish(uint64_t seq_id);
  // Ends every sequence (the workers failed); returns their ids.
  std::vector<uint64_t> finish_all();

  const Sequence* find(uint64_t seq_id) const;
  const SchedulerConfig& config() const { return config_; }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int free_kv_pages() const { return pages_.num_free(); }
  int free_gdn_slots() const { return slots_.num_free(); }
  int total_kv_pages() const { return pages_.capacity(); }
  int total_gdn_slots() const { return slots_.capacity(); }  // excluding the scratch slot
  uint64_t num_preemptions() const { return num_preemptions_; }

 private:
  bool has_page_for_next_token(const Sequence& seq) const;
  // Frees the newest running sequence; returns it.
  Sequence* preempt_newest();
  bool try_admit(Sequence& seq);
  void free_cache(Sequence& seq);
  void add_chunk(control::StepPlan& plan, Sequence& seq, int num_tokens);
  std::optional<FinishReason> stop_reason(const Sequence& seq, int32_t token) const;
  void remove(Sequence& seq);

  SchedulerConfig config_;
  KvPageAllocator pages_;
  GdnSlotAllocator slots_;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  std::vector<Sequence*> running_;  // admission order, oldest first
  std::deque<Sequence*> waiting_;   // arrival order
  std::vector<uint64_t> pending_releases_;
  std::unordered_set<int32_t> eos_;
  std::vector<uint64_t> last_plan_samples_;  // seq ids expected in the next StepResult, in order
  uint64_t next_step_id_ = 1;
  uint64_t next_arrival_ = 0;
  uint64_t num_preemptions_ = 0;
};

}  // namespace ds::server
