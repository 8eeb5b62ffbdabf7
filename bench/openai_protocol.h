// The OpenAI /v1/completions streaming protocol as the benchmark speaks it: the request body,
// and the reading of the SSE response into a RequestRecord. No sockets here (see openai_backend).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "bench/metrics.h"
#include "bench/sse.h"
#include "bench/workload.h"

namespace ds::bench {

// {"model", "prompt" (text or token-id array), "max_tokens", "temperature": 0, "stream": true,
//  "stream_options": {"include_usage": true}} plus "ignore_eos": true (the extension SGLang,
// vLLM and deltaserve accept) when asked.
nlohmann::json completion_request_body(const RequestSpec& spec, const std::string& model, bool ignore_eos);

// "HTTP <status>: <error.message>" from an error response (OpenAI error JSON or any text).
std::string http_error_reason(int status, std::string_view body);

// Reads one streamed completion: feed it the response body as it arrives, with the arrival time.
// A data event whose first choice has a "token_ids" array carries that many tokens; otherwise it
// carries one token when its "text" is non-empty, or empty but not finishing (a token whose text
// awaits more bytes); a finishing chunk with empty text carries none. "usage" sets the server's counts; an "error" object fails
// the request; "[DONE]" completes it.
class CompletionStreamReader {
 public:
  enum class State { kStreaming, kDone, kFailed };

  explicit CompletionStreamReader(RequestRecord& record) : record_(record) {}

  State feed(std::string_view bytes, double time);
  // The body ended (connection closed or message complete) at `time`: a stream that did not
  // reach [DONE] failed.
  State end_of_body();
  State state() const { return state_; }

 private:
  void on_event(const std::string& data, double time);
  void fail(std::string reason);

  RequestRecord& record_;
  SseParser sse_;
  State state_ = State::kStreaming;
};

}  // namespace ds::bench
