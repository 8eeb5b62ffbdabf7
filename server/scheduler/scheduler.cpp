#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace ds::server {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

namespace {

void check_positive(int value, const char* name) {
  if (value <= 0) throw std::invalid_argument(std::string("scheduler: ") + name + " must be positive, got " + std::to_string(value));
}

}  // namespace

Scheduler::Scheduler(SchedulerConfig config)
    : config_(std::move(config)),
      pages_(config_.num_kv_pages, config_.kv_page_size),
      slots_(config_.num_gdn_slots),
      eos_(config_.eos_token_ids.begin(), config_.eos_token_ids.end()) {
  check_positive(config_.max_running_requests, "max_running_requests");
  check_positive(config_.max_num_batched_tokens, "max_num_batched_tokens");
  check_positive(config_.num_kv_pages, "num_kv_pages");
  check_positive(config_.max_context_len, "max_context_len");
  if (config_.max_running_requests > config_.max_num_batched_tokens) {
    throw std::invalid_argument("scheduler: max_running_requests (" + std::to_string(config_.max_running_requests) +
                                ") exceeds max_num_batched_tokens (" + std::to_string(config_.max_num_batched_tokens) +
                                "): every running decode must fit in one step");
  }
  if (static_cast<int64_t>(config_.max_context_len) > static_cast<int64_t>(config_.num_kv_pages) * config_.kv_page_size) {
    throw std::invalid_argument("scheduler: max_context_len " + std::to_string(config_.max_context_len) +
                                " exceeds the KV cache (" + std::to_string(config_.num_kv_pages) + " pages of " +
                                std::to_string(config_.kv_page_size) + " tokens)");
  }
}

void Scheduler::add(Sequence seq) {
  if (seq.tokens.empty()) throw std::invalid_argument("scheduler: sequence " + std::to_string(seq.id) + " has an empty prompt");
  if (static_cast<int>(seq.tokens.size()) >= config_.max_context_len) {
    throw std::invalid_argument("scheduler: sequence " + std::to_string(seq.id) + " has " + std::to_string(seq.tokens.size()) +
                                " tokens; the context limit is " + std::to_string(config_.max_context_len));
  }
  if (seq.stop.max_tokens < 1) throw std::invalid_argument("scheduler: max_tokens must be at least 1");
  if (sequences_.contains(seq.id)) throw std::invalid_argument("scheduler: duplicate sequence id " + std::to_string(seq.id));
  auto owned = std::make_unique<Sequence>(std::move(seq));
  owned->prompt_len = static_cast<int>(owned->tokens.size());
  owned->arrival = next_arrival_++;
  owned->num_computed = 0;
  owned->gdn_slot = 0;
  owned->kv_pages.clear();
  owned->kv_pages_sent = 0;
  owned->known_to_workers = false;
  waiting_.push_back(owned.get());
  sequences_.emplace(owned->id, std::move(owned));
}

bool Scheduler::has_page_for_next_token(const Sequence& seq) const {
  return static_cast<int>(seq.kv_pages.size()) >= pages_.pages_for(seq.num_computed + 1);
}

void Scheduler::free_cache(Sequence& seq) {
  for (int32_t page : seq.kv_pages) pages_.release(page);
  seq.kv_pages.clear();
  seq.kv_pages_sent = 0;
  if (seq.gdn_slot != 0) slots_.release(seq.gdn_slot);
  seq.gdn_slot = 0;
  seq.num_computed = 0;
  if (seq.known_to_workers) pending_releases_.push_back(seq.id);
  seq.known_to_workers = false;
}

Sequence* Scheduler::preempt_newest() {
  Sequence* victim = running_.back();
  running_.pop_back();
  free_cache(*victim);
  ++victim->num_preemptions;
  ++num_preemptions_;
  auto pos = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* s) { return s->arrival > victim->arrival; });
  waiting_.insert(pos, victim);
  return victim;
}

bool Scheduler::try_admit(Sequence& seq) {
  int32_t pages_needed = pages_.pages_for(static_cast<int64_t>(seq.tokens.size()));
  if (slots_.num_free() == 0 || pages_.num_free() < pages_needed) return false;
  seq.gdn_slot = slots_.allocate();
  for (int32_t i = 0; i < pages_needed; ++i) seq.kv_pages.push_back(pages_.allocate());
  seq.num_computed = 0;
  return true;
}

void Scheduler::add_chunk(control::StepPlan& plan, Sequence& seq, int num_tokens) {
  auto* chunk = plan.add_sequences();
  chunk->set_seq_id(seq.id);
  chunk->set_gdn_slot(static_cast<uint32_t>(seq.gdn_slot));
  chunk->set_reset_slot(seq.num_computed == 0);
  chunk->set_start_pos(static_cast<uint32_t>(seq.num_computed));
  for (int i = 0; i < num_tokens; ++i) chunk->add_token_ids(static_cast<uint32_t>(seq.tokens[seq.num_computed + i]));
  for (size_t i = seq.kv_pages_sent; i < seq.kv_pages.size(); ++i) chunk->add_new_kv_pages(static_cast<uint32_t>(seq.kv_pages[i]));
  seq.kv_pages_sent = seq.kv_pages.size();
  seq.num_computed += num_tokens;
  bool sample = seq.num_computed == static_cast<int>(seq.tokens.size());
  chunk->set_sample(sample);
  chunk->set_sample_index(static_cast<uint64_t>(seq.num_generated()));
  if (sample) last_plan_samples_.push_back(seq.id);
  if (!seq.known_to_workers) {
    auto* s = chunk->mutable_sampling();
    s->set_temperature(seq.sampling.temperature);
    s->set_top_p(seq.sampling.top_p);
    s->set_top_k(seq.sampling.top_k);
    s->set_min_p(seq.sampling.min_p);
    s->set_seed(seq.sampling.seed);
    s->set_logprobs(seq.sampling.logprobs);
    seq.known_to_workers = true;
  }
}

std::optional<control::StepPlan> Scheduler::schedule() {
  control::StepPlan plan;
  last_plan_samples_.clear();
  std::unordered_set<uint64_t> preempted_now;
  int budget = config_.max_num_batched_tokens;

  // 1. Decodes of running sequences, oldest first; a missing page preempts the newest sequence.
  std::vector<Sequence*> decodes;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence* seq = running_[i];
    if (seq->num_pending() != 1) continue;  // still prefilling: step 2
    while (!has_page_for_next_token(*seq) && pages_.num_free() == 0) {
      Sequence* victim = preempt_newest();
      preempted_now.insert(victim->id);
      if (victim == seq) break;
    }
    if (preempted_now.contains(seq->id)) break;  // it was the newest: nothing after it runs
    if (!has_page_for_next_token(*seq)) seq->kv_pages.push_back(pages_.allocate());
    decodes.push_back(seq);
  }
  for (Sequence* seq : decodes) add_chunk(plan, *seq, 1);
  budget -= static_cast<int>(decodes.size());

  // 2. Prefill chunks of admitted sequences, oldest first (their pages were taken at admission).
  for (Sequence* seq : running_) {
    if (budget <= 0) break;
    if (seq->num_pending() <= 1) continue;
    int n = std::min(seq->num_pending(), budget);
    add_chunk(plan, *seq, n);
    budget -= n;
  }

  // 3. Admit waiting sequences in arrival order while a slot, pages and budget last.
  while (budget > 0 && !waiting_.empty() && num_running() < config_.max_running_requests) {
    Sequence* seq = waiting_.front();
    if (preempted_now.contains(seq->id) || !try_admit(*seq)) break;  // FCFS: no overtaking
    waiting_.pop_front();
    running_.push_back(seq);
    int n = std::min(seq->num_pending(), budget);
    add_chunk(plan, *seq, n);
    budget -= n;
  }

  if (plan.sequences_size() == 0 && pending_releases_.empty()) return std::nullopt;
  for (uint64_t id : pending_releases_) plan.add_released_seq_ids(id);
  pending_releases_.clear();
  plan.set_step_id(next_step_id_++);
  return plan;
}

std::optional<FinishReason> Scheduler::stop_reason(const Sequence& seq, int32_t token) const {
  if (!seq.stop.ignore_eos && eos_.contains(token)) return FinishReason::kStop;
  const auto& stop_ids = seq.stop.stop_token_ids;
  if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) return FinishReason::kStop;
  if (seq.num_generated() >= seq.stop.max_tokens) return FinishReason::kLength;
  if (static_cast<int>(seq.tokens.size()) >= config_.max_context_len) return FinishReason::kLength;
  return std::nullopt;
}

std::vector<TokenUpdate> Scheduler::apply(const control::StepResult& result) {
  if (static_cast<size_t>(result.tokens_size()) != last_plan_samples_.size()) {
    throw std::runtime_error("step " + std::to_string(result.step_id()) + ": worker returned " +
                             std::to_string(result.tokens_size()) + " tokens for " +
                             std::to_string(last_plan_samples_.size()) + " sampling sequences");
  }
  std::vector<TokenUpdate> updates;
  updates.reserve(result.tokens_size());
  for (int i = 0; i < result.tokens_size(); ++i) {
    const auto& sampled = result.tokens(i);
    if (sampled.seq_id() != last_plan_samples_[i]) {
      throw std::runtime_error("step " + std::to_string(result.step_id()) + ": token " + std::to_string(i) +
                               " is for sequence " + std::to_string(sampled.seq_id()) + ", expected " +
                               std::to_string(last_plan_samples_[i]));
    }
    auto it = sequences_.find(sampled.seq_id());
    if (it == sequences_.end()) continue;  // ended while the step ran
    Sequence& seq = *it->second;
    auto token = static_cast<int32_t>(sampled.token_id());
    seq.tokens.push_back(token);
    TokenUpdate update{seq.id, token, sampled.logprob(), stop_reason(seq, token)};
    if (update.finish) remove(seq);
    updates.push_back(update);
  }
  last_plan_samples_.clear();
  return updates;
}

void Scheduler::remove(Sequence& seq) {
  if (auto it = std::find(running_.begin(), running_.end(), &seq); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), &seq); it != waiting_.end()) waiting_.erase(it);
  free_cache(seq);
  sequences_.erase(seq.id);
}

bool Scheduler::finish(uint64_t seq_id) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return false;
  remove(*it->second);
  return true;
}

std::vector<uint64_t> Scheduler::finish_all() {
  std::vector<uint64_t> ids;
  for (const auto& [id, seq] : sequences_) ids.push_back(id);
  for (uint64_t id : ids) finish(id);
  return ids;
}

const Sequence* Scheduler::find(uint64_t seq_id) const {
  auto it = sequences_.find(seq_id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

}  // namespace ds::server
