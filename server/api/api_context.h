// What the HTTP and gRPC front doors share: the engine, the tokenizer, the served model's facts,
// the metrics and the access key.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "server/engine/engine.h"
#include "server/metrics/metrics.h"
#include "server/tokenizer/tokenizer.h"

namespace ds::server {

struct ServedModel {
  std::string id;          // the name clients pass as "model"
  std::string model_type;  // config.json model_type
  int max_context_len = 0;
  int vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
};

struct ServerFacts {
  std::string version;
  int tensor_parallel_size = 1;
  int max_running_requests = 0;
  int max_num_batched_tokens = 0;
  int kv_pages_total = 0;
  int kv_page_size = 0;
  int gdn_slots_total = 0;
};

struct ApiContext {
  Engine& engine;
  const Tokenizer& tokenizer;
  Metrics& metrics;
  ServedModel model;
  ServerFacts server;
  std::string api_key;  // empty: no authentication
};

// A request the API refuses, with its HTTP status and OpenAI error fields.
class ApiError : public std::runtime_error {
 public:
  ApiError(int http_status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(std::move(message)),
        http_status(http_status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int http_status;
  std::string type;
  std::string param;  // empty: null
  std::string code;   // empty: null
};

// Constant-time comparison of "Bearer <key>" against the configured key; true when no key is set.
bool authorized(const ApiContext& context, std::string_view authorization_header);

// 400 when prompt + max_tokens does not fit the context, naming the limit.
void check_context_length(const ApiContext& context, size_t prompt_tokens, int max_tokens, const char* prompt_param);

// Submits to the engine, translating its refusals into ApiError (400 / 503).
std::shared_ptr<RequestStream> submit_or_throw(ApiContext& context, GenerateInput input);

}  // namespace ds::server
