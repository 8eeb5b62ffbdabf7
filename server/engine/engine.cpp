#include "server/engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>


namespace ds::server {

namespace {

using Clock = std::chrono::steady_clock;

constexpr double kSlowStepSeconds = 10.0;  // worth a line in the log: clients are waiting

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

Outcome outcome_of(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return Outcome::kStop;
    case FinishReason::kLength: return Outcome::kLength;
    case FinishReason::kAbort: return Outcome::kAbort;
    case FinishReason::kError: return Outcome::kError;
  }
  return Outcome::kError;
}

}  // namespace

Engine::Engine(EngineOptions options, const Tokenizer& tokenizer, StepExecutor& executor, Metrics& metrics)
    : options_(std::move(options)), tokenizer_(tokenizer), executor_(executor), metrics_(metrics), scheduler_(options_.scheduler) {
  gauges_.kv_pages_total = scheduler_.total_kv_pages();
  gauges_.gdn_slots_total = scheduler_.total_gdn_slots();
  gauges_.healthy = true;
}

Engine::~Engine() { stop("server shutting down"); }

void Engine::start() { thread_ = std::thread([this] { loop(); }); }

void Engine::stop(const std::string& reason) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (!failure_) failure_ = reason;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::begin_drain() {
  std::lock_guard lock(mutex_);
  draining_ = true;
}

std::shared_ptr<RequestStream> Engine::submit(GenerateInput input) {
  if (input.prompt.empty()) throw std::invalid_argument("the prompt is empty");
  int limit = options_.scheduler.max_context_len;
  if (static_cast<int>(input.prompt.size()) >= limit) {
    throw std::invalid_argument("the prompt has " + std::to_string(input.prompt.size()) +
                                " tokens; this model's maximum context length is " + std::to_string(limit) +
                                " tokens, and at least one must be left to generate");
  }
  for (int32_t id : input.prompt) {
    if (id < 0 || id >= options_.vocab_size) {
      throw std::invalid_argument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(options_.vocab_size) + ")");
    }
  }
  if (input.stop.max_tokens < 1) throw std::invalid_argument("max_tokens must be at least 1");
  StopStringMatcher check(input.stop_strings);  // throws on an empty stop string

  Submitted submitted;
  submitted.sequence.tokens = std::move(input.prompt);
  submitted.sequence.sampling = input.sampling;
  submitted.sequence.stop = std::move(input.stop);
  submitted.stop_strings = std::move(input.stop_strings);
  submitted.skip_special_tokens = input.skip_special_tokens;
  submitted.arrival = Clock::now();
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || draining_) throw EngineUnavailable("the server is shutting down");
    if (failure_) throw EngineUnavailable("the server is unhealthy: " + *failure_);
    if (gauges_.waiting_requests + static_cast<int>(incoming_.size()) >= options_.max_waiting_requests) {
      throw EngineUnavailable("the server is overloaded: " + std::to_string(options_.max_waiting_requests) +
                              " requests are already waiting");
    }
    uint64_t seq_id = next_seq_id_++;
    std::string request_id = input.request_id.empty() ? "req-" + std::to_string(seq_id) : input.request_id;
    if (!request_ids_.emplace(request_id, seq_id).second) {
      throw std::invalid_argument("request_id '" + request_id + "' is already in flight");
    }
    submitted.sequence.id = seq_id;
    stream = std::make_shared<RequestStream>(seq_id, request_id, static_cast<int>(submitted.sequence.tokens.size()));
    submitted.stream = stream;
    incoming_.push_back(std::move(submitted));
    ++num_active_;
  }
  wake_.notify_one();
  return stream;
}

void Engine::abort(uint64_t seq_id, std::string reason) {
  {
    std::lock_guard lock(mutex_);
    aborts_.emplace_back(seq_id, std::move(reason));
  }
  wake_.notify_one();
}

bool Engine::abort(const std::string& request_id, std::string reason) {
  uint64_t seq_id = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = request_ids_.find(request_id);
    if (it == request_ids_.end()) return false;
    seq_id = it->second;
  }
  abort(seq_id, std::move(reason));
  return true;
}

void Engine::mark_failed(std::string message) {
  {
    std::lock_guard lock(mutex_);
    if (failure_) {
      if (message.size() > failure_->size() && message.rfind(*failure_, 0) == 0) failure_ = std::move(message);
      return;
    }
    failure_ = std::move(message);
  }
  wake_.notify_one();
}

bool Engine::healthy() const {
  std::lock_guard lock(mutex_);
  return healthy_ && !failure_ && !draining_;
}

std::string Engine::health_message() const {
  std::lock_guard lock(mutex_);
  if (failure_) return *failure_;
  return draining_ ? "shutting down" : health_message_;
}

GaugeSnapshot Engine::gauges() const {
  std::lock_guard lock(mutex_);
  GaugeSnapshot g = gauges_;
  g.healthy = healthy_ && !failure_ && !draining_;
  return g;
}

void Engine::loop() {
  bool failed = false;
  for (;;) {
    std::vector<Submitted> incoming;
    std::vector<std::pair<uint64_t, std::string>> aborts;
    std::optional<std::string> failure;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !aborts_.empty() || (failure_ && !failed) || busy_; });
      if (stopping_) break;
      incoming.swap(incoming_);
      aborts.swap(aborts_);
      if (failure_ && !failed) failure = failure_;
    }
    for (auto& s : incoming) admit(std::move(s));
    for (auto& [seq_id, reason] : aborts) {
      if (active_.contains(seq_id)) {
        scheduler_.finish(seq_id);
        complete(seq_id, FinishReason::kAbort, reason);
      }
    }
    if (failure) {
      failed = true;
      fail_all(*failure);
    }
    if (!failed) run_step();
    publish_gauges();
  }
  // Shutdown: everything still queued or running ends as aborted.
  std::string reason;
  {
    std::lock_guard lock(mutex_);
    reason = failure_.value_or("server shutting down");
    for (auto& s : incoming_) {
      s.stream->finish(FinishReason::kAbort, reason);
      --num_active_;
    }
    incoming_.clear();
  }
  scheduler_.finish_all();
  std::vector<uint64_t> ids;
  for (const auto& [id, a] : active_) ids.push_back(id);
  for (uint64_t id : ids) complete(id, FinishReason::kAbort, reason);
}

void Engine::admit(Submitted s) {
  uint64_t seq_id = s.sequence.id;
  Active active;
  active.stream = s.stream;
  active.detokenizer = std::make_unique<IncrementalDetokenizer>(tokenizer_, s.skip_special_tokens);
  active.stops = std::make_unique<StopStringMatcher>(std::move(s.stop_strings));
  active.logprobs = s.sequence.sampling.logprobs;
  active.arrival = s.arrival;
  size_t prompt_tokens = s.sequence.tokens.size();
  active_.emplace(seq_id, std::move(active));
  try {
    scheduler_.add(std::move(s.sequence));
  } catch (const std::invalid_argument& e) {
    complete(seq_id, FinishReason::kError, e.what());
    return;
  }
  metrics_.add_prompt_tokens(prompt_tokens);
  busy_ = true;
}

void Engine::run_step() {
  uint64_t preemptions_before = scheduler_.num_preemptions();
  auto plan = scheduler_.schedule();
  if (!plan) {
    busy_ = false;
    return;
  }
  busy_ = true;
  for (uint64_t i = preemptions_before; i < scheduler_.num_preemptions(); ++i) metrics_.count_preemption();
  auto start = Clock::now();
  std::vector<TokenUpdate> updates;
  try {
    control::StepResult result = executor_.execute(*plan);
    double seconds = seconds_between(start, Clock::now());
    metrics_.observe_control_plane(std::max(0.0, seconds - result.step_ms() / 1000.0));
    if (seconds > kSlowStepSeconds) {
      spdlog::warn("step {} took {:.1f} s for {} sequences (rank 0: forward {:.0f} ms, plan-to-result {:.0f} ms)", plan->step_id(),
                   seconds, plan->sequences_size(), result.forward_ms(), result.step_ms());
    }
    updates = scheduler_.apply(result);
  } catch (const std::exception& e) {
    spdlog::error("step {} failed: {}", plan->step_id(), e.what());
    {
      std::lock_guard lock(mutex_);
      if (!failure_) failure_ = e.what();
    }
    wake_.notify_one();
    return;
  }
  metrics_.observe_step(seconds_between(start, Clock::now()));
  for (const auto& update : updates) on_token(update);
}

std::string Engine::text_of(Active& active, int32_t token) {
  if (token < 0 || token >= tokenizer_.vocab_size()) return {};  // the model's padded vocabulary tail has no text
  return active.detokenizer->push(token);
}

void Engine::on_token(const TokenUpdate& update) {
  auto it = active_.find(update.seq_id);
  if (it == active_.end()) return;
  Active& a = it->second;
  auto now = Clock::now();
  if (a.last_token) {
    metrics_.observe_itl(seconds_between(*a.last_token, now));
  } else {
    metrics_.observe_ttft(seconds_between(a.arrival, now));
  }
  a.last_token = now;
  metrics_.add_generation_tokens(1);

  // A token that stops generation by id (EOS, stop_token_ids) is returned but shows no text.
  bool stopped_by_token = update.finish == FinishReason::kStop;
  std::string visible = stopped_by_token ? std::string() : a.stops->push(text_of(a, update.token_id));
  a.stream->push_token(update.token_id, update.logprob, a.logprobs, visible);
  if (a.stops->matched()) {
    if (!update.finish) scheduler_.finish(update.seq_id);
    complete(update.seq_id, FinishReason::kStop, *a.stops->matched());
    return;
  }
  if (!update.finish) return;
  std::string tail = a.stops->push(a.detokenizer->flush());
  if (a.stops->matched()) {
    a.stream->push_text(tail);
    complete(update.seq_id, FinishReason::kStop, *a.stops->matched());
    return;
  }
  a.stream->push_text(tail + a.stops->flush());
  complete(update.seq_id, *update.finish, "");
}

void Engine::complete(uint64_t seq_id, FinishReason reason, std::string message) {
  auto it = active_.find(seq_id);
  if (it == active_.end()) return;
  Active& a = it->second;
  if (a.last_token) metrics_.observe_e2e(seconds_between(a.arrival, *a.last_token));
  metrics_.count_request(outcome_of(reason));
  if (reason == FinishReason::kAbort || reason == FinishReason::kError) a.stream->push_text(a.stops->push(a.detokenizer->flush()) + a.stops->flush());
  a.stream->finish(reason, std::move(message));
  {
    std::lock_guard lock(mutex_);
    request_ids_.erase(a.stream->request_id());
  }
  active_.erase(it);
  --num_active_;
}

void Engine::fail_all(const std::string& message) {
  spdlog::error("failing every request: {}", message);
  scheduler_.finish_all();
  std::vector<uint64_t> ids;
  for (const auto& [id, a] : active_) ids.push_back(id);
  for (uint64_t id : ids) complete(id, FinishReason::kError, message);
  busy_ = false;
}

void Engine::publish_gauges() {
  std::lock_guard lock(mutex_);
  gauges_.running_requests = scheduler_.num_running();
  gauges_.waiting_requests = scheduler_.num_waiting();
  gauges_.kv_pages_used = scheduler_.total_kv_pages() - scheduler_.free_kv_pages();
  gauges_.gdn_slots_used = scheduler_.total_gdn_slots() - scheduler_.free_gdn_slots();
}

}  // namespace ds::server
