// Request parsing and response formatting of the HTTP API: OpenAI /v1/completions and
// /v1/chat/completions (streamed as SSE or not, stream_options.include_usage, logprobs of the
// chosen token) and the native /generate. Pure functions of the request body, testable alone.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "server/api/api_context.h"

namespace ds::server {

enum class ApiKind { kCompletion, kChat, kNative };

struct ParsedGenerate {
  ApiKind kind = ApiKind::kCompletion;
  GenerateInput input;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
};

// Throws ApiError (400 bad JSON / types / values / context length, 404 unknown model).
ParsedGenerate parse_generate(ApiKind kind, std::string_view body, const ApiContext& context);

// {"error": {"message", "type", "param", "code"}}
std::string error_json(const ApiError& error);

// Turns a request's output deltas into the response of its API: SSE events when streaming,
// one JSON body otherwise.
class ResponseFormatter {
 public:
  ResponseFormatter(const ParsedGenerate& request, const ApiContext& context, std::string id);

  // Streaming: the SSE events for this delta (the last one ends with "data: [DONE]").
  std::string sse_events(const OutputDelta& delta);
  // Non-streaming: collect deltas; then final_response() gives the HTTP status and body.
  void accumulate(const OutputDelta& delta);
  std::pair<int, std::string> final_response() const;
  // The response headers' Content-Type.
  const char* stream_content_type() const { return "text/event-stream"; }

 private:
  nlohmann::json chunk_base() const;
  nlohmann::json logprobs_json(const std::vector<int32_t>& ids, const std::vector<float>& logprobs, size_t text_offset) const;
  nlohmann::json usage_json(int prompt_tokens, int completion_tokens) const;
  std::string finish_reason_string(FinishReason reason) const;
  static std::string sse(const nlohmann::json& j);
  ApiError error_for(FinishReason reason, const std::string& message) const;

  ApiKind kind_;
  bool include_usage_;
  bool logprobs_;
  const ApiContext& context_;
  std::string id_;
  int64_t created_;
  bool sent_role_ = false;
  // Non-streaming accumulation.
  std::string text_;
  std::vector<int32_t> token_ids_;
  std::vector<float> token_logprobs_;
  OutputDelta last_;
};

}  // namespace ds::server
