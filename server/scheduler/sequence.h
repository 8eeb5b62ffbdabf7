// One request's generation state as the scheduler sees it: token ids, cache placement, limits.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace ds::server {

enum class FinishReason { kStop, kLength, kAbort, kError };

const char* finish_reason_name(FinishReason reason);  // "stop", "length", "abort", "error"

// Per-request sampling, forwarded to the workers once per (re)admission.
struct SamplingOptions {
  float temperature = 1.f;  // 0: greedy
  float top_p = 1.f;
  int top_k = 0;            // <= 0: off
  float min_p = 0.f;
  uint64_t seed = 0;
  bool logprobs = false;
};

// Token-level stop conditions (stop strings live with the text, in the engine).
struct StopOptions {
  int max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

struct Sequence {
  uint64_t id = 0;
  uint64_t arrival = 0;          // FCFS order, set by Scheduler::add
  std::vector<int32_t> tokens;  // prompt followed by the generated tokens
  int prompt_len = 0;
  SamplingOptions sampling;
  StopOptions stop;

  // Cache placement; valid while running.
  int num_computed = 0;           // leading tokens whose KV / GDN state the workers hold
  int gdn_slot = 0;               // 0: none (slot 0 is the workers' scratch slot)
  std::vector<int32_t> kv_pages;  // page table
  size_t kv_pages_sent = 0;       // prefix of kv_pages the workers already have
  bool known_to_workers = false;  // workers hold its page table and sampling config
  int num_preemptions = 0;

  int num_generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
  int num_pending() const { return static_cast<int>(tokens.size()) - num_computed; }
};

}  // namespace ds::server
