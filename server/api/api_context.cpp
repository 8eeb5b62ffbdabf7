#include "server/api/api_context.h"

namespace ds::server {

bool authorized(const ApiContext& context, std::string_view authorization_header) {
  if (context.api_key.empty()) return true;
  const std::string expected = "Bearer " + context.api_key;
  if (authorization_header.size() != expected.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) diff |= static_cast<unsigned char>(authorization_header[i] ^ expected[i]);
  return diff == 0;
}

void check_context_length(const ApiContext& context, size_t prompt_tokens, int max_tokens, const char* prompt_param) {
  const size_t limit = static_cast<size_t>(context.model.max_context_len);
  if (prompt_tokens + static_cast<size_t>(max_tokens) > limit) {
    throw ApiError(400,
                   "This model's maximum context length is " + std::to_string(limit) + " tokens. However, you requested " +
                       std::to_string(prompt_tokens + max_tokens) + " tokens (" + std::to_string(prompt_tokens) +
                       " in the prompt, " + std::to_string(max_tokens) +
                       " for the completion). Please reduce the length of the prompt or max_tokens.",
                   "invalid_request_error", prompt_param, "context_length_exceeded");
  }
}

std::shared_ptr<RequestStream> submit_or_throw(ApiContext& context, GenerateInput input) {
  try {
    return context.engine.submit(std::move(input));
  } catch (const EngineUnavailable& e) {
    throw ApiError(503, e.what(), "service_unavailable", "", "service_unavailable");
  } catch (const std::invalid_argument& e) {
    throw ApiError(400, e.what());
  }
}

}  // namespace ds::server
