#include "server/engine/request_stream.h"

#include <atomic>

namespace ds::server {

namespace {
std::atomic<int> live_streams{0};
}  // namespace

RequestStream::RequestStream(uint64_t seq_id, std::string request_id, int prompt_tokens)
    : seq_id_(seq_id), request_id_(std::move(request_id)), prompt_tokens_(prompt_tokens) {
  live_streams.fetch_add(1, std::memory_order_relaxed);
}

RequestStream::~RequestStream() { live_streams.fetch_sub(1, std::memory_order_relaxed); }

int RequestStream::live_count() { return live_streams.load(std::memory_order_relaxed); }

void RequestStream::set_notify(std::function<void()> notify) {
  std::function<void()> due;
  {
    std::lock_guard lock(mutex_);
    notify_ = std::move(notify);
    notified_ = false;
    if (!pending_.empty()) due = arm_locked();
  }
  if (due) due();
}

OutputDelta RequestStream::take() {
  std::lock_guard lock(mutex_);
  notified_ = false;
  OutputDelta out = std::move(pending_);
  pending_ = OutputDelta{};
  out.prompt_tokens = prompt_tokens_;
  out.completion_tokens = completion_tokens_;
  return out;
}

std::function<void()> RequestStream::arm_locked() {
  if (notified_ || !notify_) return {};
  notified_ = true;
  return notify_;
}

void RequestStream::push_token(int32_t token, float logprob, bool with_logprob, std::string_view text) {
  std::function<void()> due;
  {
    std::lock_guard lock(mutex_);
    pending_.token_ids.push_back(token);
    if (with_logprob) pending_.logprobs.push_back(logprob);
    pending_.text.append(text);
    ++completion_tokens_;
    due = arm_locked();
  }
  if (due) due();
}

void RequestStream::push_text(std::string_view text) {
  if (text.empty()) return;
  std::function<void()> due;
  {
    std::lock_guard lock(mutex_);
    pending_.text.append(text);
    due = arm_locked();
  }
  if (due) due();
}

void RequestStream::finish(FinishReason reason, std::string message) {
  std::function<void()> due;
  {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    pending_.finish = reason;
    pending_.finish_message = std::move(message);
    due = arm_locked();
  }
  if (due) due();
}

bool RequestStream::finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

}  // namespace ds::server
