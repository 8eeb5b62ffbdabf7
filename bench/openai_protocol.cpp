#include "bench/openai_protocol.h"

namespace ds::bench {

nlohmann::json completion_request_body(const RequestSpec& spec, const std::string& model, bool ignore_eos) {
  nlohmann::json body;
  body["model"] = model;
  std::visit([&](const auto& p) { body["prompt"] = p; }, spec.prompt);
  body["max_tokens"] = spec.output_len;
  body["temperature"] = 0.0;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (ignore_eos) body["ignore_eos"] = true;
  return body;
}

std::string http_error_reason(int status, std::string_view body) {
  std::string reason = "HTTP " + std::to_string(status);
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) return reason + ": " + e["message"].get<std::string>();
    if (e.is_string()) return reason + ": " + e.get<std::string>();
  }
  std::string text(body.substr(0, 200));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.empty() ? reason : reason + ": " + text;
}

CompletionStreamReader::State CompletionStreamReader::feed(std::string_view bytes, double time) {
  for (const auto& data : sse_.feed(bytes)) {
    if (state_ != State::kStreaming) break;  // nothing after [DONE] or an error counts
    on_event(data, time);
  }
  return state_;
}

CompletionStreamReader::State CompletionStreamReader::end_of_body() {
  if (state_ == State::kStreaming) fail("stream ended before [DONE]");
  return state_;
}

void CompletionStreamReader::fail(std::string reason) {
  record_.success = false;
  record_.error = std::move(reason);
  state_ = State::kFailed;
}

static int chunk_tokens(const nlohmann::json& chunk) {
  if (!chunk.contains("choices") || !chunk["choices"].is_array() || chunk["choices"].empty()) return 0;
  const auto& choice = chunk["choices"][0];
  if (choice.contains("token_ids") && choice["token_ids"].is_array()) return int(choice["token_ids"].size());
  if (choice.contains("text") && choice["text"].is_string() && !choice["text"].get_ref<const std::string&>().empty()) return 1;
  // An empty-text chunk before the finish carries a token whose text is not complete UTF-8 yet
  // (servers that stream every token, deltaserve among them); an empty final chunk carries none.
  bool finishing = choice.contains("finish_reason") && !choice["finish_reason"].is_null();
  return choice.contains("text") && !finishing ? 1 : 0;
}

void CompletionStreamReader::on_event(const std::string& data, double time) {
  if (data == "[DONE]") {
    if (record_.chunks.empty()) return fail("stream completed without any token");
    record_.success = true;
    state_ = State::kDone;
    return;
  }
  auto chunk = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!chunk.is_object()) return fail("bad stream event (not a JSON object): " + data.substr(0, 200));
  if (chunk.contains("error")) {
    const auto& e = chunk["error"];
    bool has_message = e.is_object() && e.contains("message") && e["message"].is_string();
    return fail("stream error: " + (has_message ? e["message"].get<std::string>() : e.dump()));
  }
  if (int tokens = chunk_tokens(chunk); tokens > 0) record_.chunks.push_back({time, tokens});
  if (chunk.contains("usage") && chunk["usage"].is_object()) {
    const auto& u = chunk["usage"];
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) record_.usage_prompt_tokens = u["prompt_tokens"].get<int>();
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
      record_.usage_completion_tokens = u["completion_tokens"].get<int>();
  }
}

}  // namespace ds::bench
