// The per-request output queue between the engine's loop thread (producer) and one API handler
// (consumer). The engine never blocks on it: output that a slow client has not taken yet is merged
// into one pending delta, and the consumer is woken by at most one notification per take().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/scheduler/sequence.h"

namespace ds::server {

struct OutputDelta {
  std::vector<int32_t> token_ids;  // new tokens since the last take()
  std::string text;                // new whole-UTF-8 text since the last take()
  std::vector<float> logprobs;     // one per token id when requested
  std::optional<FinishReason> finish;  // set once, on the last delta
  std::string finish_message;      // the matched stop string, or why it aborted / failed
  int prompt_tokens = 0;
  int completion_tokens = 0;       // total so far

  bool empty() const { return token_ids.empty() && text.empty() && !finish; }
};

class RequestStream {
 public:
  RequestStream(uint64_t seq_id, std::string request_id, int prompt_tokens);
  ~RequestStream();
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  // Streams alive in this process. The engine and the API handler that writes a stream's output
  // both hold it, and the handler lets go only after its last write completed, so 0 means every
  // final message (completion or abort reason) has reached its client's socket.
  static int live_count();

  uint64_t seq_id() const { return seq_id_; }
  const std::string& request_id() const { return request_id_; }
  int prompt_tokens() const { return prompt_tokens_; }

  // Consumer side. `notify` runs on the engine thread (never under the stream's lock) when output
  // arrives after a take(); it must only schedule work (post to an executor), never block.
  // Set it before the first take(); a notification is due at once if output is already pending.
  void set_notify(std::function<void()> notify);
  // Everything pending, merged; empty when nothing new.
  OutputDelta take();

  // Producer side (the engine).
  void push_token(int32_t token, float logprob, bool with_logprob, std::string_view text);
  void push_text(std::string_view text);
  void finish(FinishReason reason, std::string message);
  bool finished() const;

 private:
  // Returns the notification to run after unlocking, if one is due.
  std::function<void()> arm_locked();

  const uint64_t seq_id_;
  const std::string request_id_;
  const int prompt_tokens_;
  mutable std::mutex mutex_;
  OutputDelta pending_;
  int completion_tokens_ = 0;
  bool finished_ = false;
  bool notified_ = false;  // a notification went out and no take() has happened since
  std::function<void()> notify_;
};

}  // namespace ds::server
