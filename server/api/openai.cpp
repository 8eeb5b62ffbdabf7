#include "server/api/openai.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "server/tokenizer/chat_format.h"
#include "server/tokenizer/detokenizer.h"

namespace ds::server {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int kDefaultMaxTokens = 16;
constexpr size_t kMaxStopStrings = 16;

ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, message, "invalid_request_error", param); }

// Typed, range-checked access to the fields of a JSON object; null counts as absent.
class Fields {
 public:
  Fields(const ojson& object, std::string prefix) : object_(object), prefix_(std::move(prefix)) {}

  const ojson* get(const char* name) const {
    auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string path(const char* name) const { return prefix_ + name; }

  std::optional<double> number(const char* name, double lo, double hi) const {
    const ojson* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) throw bad(path(name), "'" + path(name) + "' must be a number");
    double x = v->get<double>();
    if (!(x >= lo && x <= hi)) {
      throw bad(path(name), "'" + path(name) + "' must be in [" + fmt(lo) + ", " + fmt(hi) + "], got " + fmt(x));
    }
    return x;
  }
  std::optional<int64_t> integer(const char* name, int64_t lo, int64_t hi) const {
    const ojson* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) throw bad(path(name), "'" + path(name) + "' must be an integer");
    int64_t x = v->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v->get<uint64_t>(), INT64_MAX)) : v->get<int64_t>();
    if (x < lo || x > hi) {
      throw bad(path(name), "'" + path(name) + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                std::to_string(x));
    }
    return x;
  }
  std::optional<bool> boolean(const char* name) const {
    const ojson* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw bad(path(name), "'" + path(name) + "' must be a boolean");
    return v->get<bool>();
  }
  std::optional<std::string> string(const char* name) const {
    const ojson* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw bad(path(name), "'" + path(name) + "' must be a string");
    return v->get<std::string>();
  }

 private:
  static std::string fmt(double x) {
    std::string s = std::to_string(x);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  }
  const ojson& object_;
  std::string prefix_;
};

std::vector<int32_t> token_id_array(const ojson& value, const std::string& param, int vocab_size) {
  if (!value.is_array()) throw bad(param, "'" + param + "' must be an array of token ids");
  std::vector<int32_t> ids;
  for (const auto& v : value) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size) {
      throw bad(param, "'" + param + "' must hold integer token ids in [0, " + std::to_string(vocab_size) + ")");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

std::vector<std::string> stop_strings(const Fields& f, const char* name) {
  const ojson* v = f.get(name);
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const auto& s : *v) {
      if (!s.is_string()) throw bad(f.path(name), "'" + f.path(name) + "' must be a string or an array of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    throw bad(f.path(name), "'" + f.path(name) + "' must be a string or an array of strings");
  }
  if (out.size() > kMaxStopStrings) throw bad(f.path(name), "at most " + std::to_string(kMaxStopStrings) + " stop strings");
  for (const auto& s : out) {
    if (s.empty()) throw bad(f.path(name), "stop strings must not be empty");
  }
  return out;
}

// The sampling fields every generation API shares (OpenAI names; vLLM/SGLang extensions).
void parse_sampling(const Fields& f, GenerateInput& in, int vocab_size) {
  in.sampling.temperature = static_cast<float>(f.number("temperature", 0, 100).value_or(1.0));
  in.sampling.top_p = static_cast<float>(f.number("top_p", 0, 1).value_or(1.0));
  if (in.sampling.top_p <= 0.f) throw bad(f.path("top_p"), "'" + f.path("top_p") + "' must be in (0, 1]");
  in.sampling.top_k = static_cast<int>(f.integer("top_k", -1, std::numeric_limits<int32_t>::max()).value_or(0));
  if (in.sampling.top_k < 0) in.sampling.top_k = 0;
  double min_p = f.number("min_p", 0, 1).value_or(0.0);
  if (min_p >= 1.0) throw bad(f.path("min_p"), "'" + f.path("min_p") + "' must be in [0, 1)");
  in.sampling.min_p = static_cast<float>(min_p);
  in.sampling.seed = static_cast<uint64_t>(f.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()).value_or(0));
  in.stop_strings = stop_strings(f, "stop");
  if (const ojson* ids = f.get("stop_token_ids")) in.stop.stop_token_ids = token_id_array(*ids, f.path("stop_token_ids"), vocab_size);
  in.stop.ignore_eos = f.boolean("ignore_eos").value_or(false);
  in.skip_special_tokens = f.boolean("skip_special_tokens").value_or(true);
  for (const char* name : {"presence_penalty", "frequency_penalty", "repetition_penalty"}) {
    double neutral = std::string(name) == "repetition_penalty" ? 1.0 : 0.0;
    if (auto v = f.number(name, -1e9, 1e9); v && *v != neutral) throw bad(f.path(name), std::string("'") + name + "' is not supported");
  }
}

void refuse_n_greater_than_one(const Fields& f) {
  if (auto n = f.integer("n", 1, std::numeric_limits<int32_t>::max()); n && *n != 1) {
    throw bad("n", "n=" + std::to_string(*n) + " is not supported: this server returns one choice per request (n must be 1)");
  }
  if (auto b = f.integer("best_of", 1, std::numeric_limits<int32_t>::max()); b && *b != 1) {
    throw bad("best_of", "best_of > 1 is not supported");
  }
}

void check_model(const Fields& f, const ApiContext& context, bool required) {
  auto model = f.string("model");
  if (!model) {
    if (required) throw bad("model", "'model' is required");
    return;
  }
  if (*model != context.model.id) {
    throw ApiError(404, "The model '" + *model + "' does not exist; this server serves '" + context.model.id + "'",
                   "invalid_request_error", "model", "model_not_found");
  }
}

void parse_stream(const Fields& f, ParsedGenerate& out) {
  out.stream = f.boolean("stream").value_or(false);
  if (const ojson* so = f.get("stream_options")) {
    if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    if (!out.stream) throw bad("stream_options", "'stream_options' is only allowed with stream: true");
    out.include_usage = Fields(*so, "stream_options.").boolean("include_usage").value_or(false);
  }
}

std::vector<int32_t> encode_text(const ApiContext& context, const std::string& text, const std::string& param) {
  try {
    return context.tokenizer.encode(text, /*allow_special=*/true);
  } catch (const std::invalid_argument& e) {
    throw bad(param, "'" + param + "': " + e.what());
  }
}

int resolve_max_tokens(const Fields& f, const char* name, const ApiContext& context, size_t prompt_tokens, std::optional<int> fallback,
                       const char* prompt_param) {
  auto max_tokens = f.integer(name, 1, std::numeric_limits<int32_t>::max());
  if (!max_tokens) {
    if (prompt_tokens >= static_cast<size_t>(context.model.max_context_len)) check_context_length(context, prompt_tokens, 1, prompt_param);
    int rest = context.model.max_context_len - static_cast<int>(prompt_tokens);
    return fallback ? std::min(*fallback, rest) : rest;
  }
  check_context_length(context, prompt_tokens, static_cast<int>(*max_tokens), prompt_param);
  return static_cast<int>(*max_tokens);
}

// OpenAI messages -> ChatMessages through the tokenizer's converter; its errors start with the
// offending field ("messages[2].content[0].type ..."), which becomes the error's param.
std::vector<ChatMessage> parse_messages(const ojson& body) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) throw bad("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> messages;
  try {
    messages = chat_messages_from_openai(*it);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    throw bad(what.substr(0, what.find(' ')), what);
  }
  for (auto& message : messages) {
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name for it
  }
  return messages;
}

ParsedGenerate parse_completion(const ojson& body, const ApiContext& context) {
  Fields f(body, "");
  ParsedGenerate out;
  check_model(f, context, false);
  refuse_n_greater_than_one(f);
  parse_stream(f, out);
  if (f.boolean("echo").value_or(false)) throw bad("echo", "'echo' is not supported");
  if (f.get("suffix")) throw bad("suffix", "'suffix' is not supported");
  const ojson* prompt = f.get("prompt");
  if (!prompt) throw bad("prompt", "'prompt' is required");
  if (prompt->is_string()) {
    out.input.prompt = encode_text(context, prompt->get<std::string>(), "prompt");
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
    out.input.prompt = token_id_array(*prompt, "prompt", context.model.vocab_size);
  } else if (prompt->is_array() && prompt->size() == 1) {
    const ojson& only = (*prompt)[0];
    if (only.is_string()) {
      out.input.prompt = encode_text(context, only.get<std::string>(), "prompt");
    } else {
      out.input.prompt = token_id_array(only, "prompt", context.model.vocab_size);
    }
  } else if (prompt->is_array() && prompt->size() > 1) {
    throw bad("prompt", "batched prompts are not supported: send one prompt per request");
  } else {
    throw bad("prompt", "'prompt' must be a string, an array of token ids, or an array holding one of those");
  }
  if (out.input.prompt.empty()) throw bad("prompt", "'prompt' is empty");
  parse_sampling(f, out.input, context.model.vocab_size);
  if (auto lp = f.integer("logprobs", 0, 20)) {
    if (*lp > 1) throw bad("logprobs", "only the chosen token's log-probability is available: 'logprobs' must be 0 or 1");
    out.logprobs = *lp == 1;
  }
  out.input.stop.max_tokens = resolve_max_tokens(f, "max_tokens", context, out.input.prompt.size(), kDefaultMaxTokens, "prompt");
  return out;
}

ParsedGenerate parse_chat(const ojson& body, const ApiContext& context) {
  Fields f(body, "");
  ParsedGenerate out;
  check_model(f, context, false);
  refuse_n_greater_than_one(f);
  parse_stream(f, out);
  std::vector<ChatMessage> messages = parse_messages(body);
  ChatOptions options;
  if (const ojson* kwargs = f.get("chat_template_kwargs")) {
    if (!kwargs->is_object()) throw bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    options.enable_thinking = Fields(*kwargs, "chat_template_kwargs.").boolean("enable_thinking").value_or(true);
  }
  if (const ojson* tools = f.get("tools")) options.tools = *tools;
  std::string prompt;
  try {
    prompt = format_chat(messages, options);
  } catch (const std::invalid_argument& e) {
    throw bad("messages", e.what());
  }
  out.input.prompt = encode_text(context, prompt, "messages");
  parse_sampling(f, out.input, context.model.vocab_size);
  out.logprobs = f.boolean("logprobs").value_or(false);
  if (auto top = f.integer("top_logprobs", 0, 20); top && *top > 0) {
    throw bad("top_logprobs", "only the chosen token's log-probability is available: 'top_logprobs' must be 0");
  }
  const char* max_name = f.get("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  out.input.stop.max_tokens = resolve_max_tokens(f, max_name, context, out.input.prompt.size(), std::nullopt, "messages");
  return out;
}

ParsedGenerate parse_native(const ojson& body, const ApiContext& context) {
  Fields f(body, "");
  ParsedGenerate out;
  check_model(f, context, false);
  out.stream = f.boolean("stream").value_or(false);
  out.logprobs = f.boolean("return_logprob").value_or(false);
  if (auto rid = f.string("rid")) out.input.request_id = *rid;
  if (auto text = f.string("text")) {
    out.input.prompt = encode_text(context, *text, "text");
  } else if (const ojson* ids = f.get("input_ids")) {
    out.input.prompt = token_id_array(*ids, "input_ids", context.model.vocab_size);
  } else {
    throw bad("text", "either 'text' or 'input_ids' is required");
  }
  if (out.input.prompt.empty()) throw bad("text", "the prompt is empty");
  static const ojson kEmpty = ojson::object();
  const ojson* sp = f.get("sampling_params");
  if (sp && !sp->is_object()) throw bad("sampling_params", "'sampling_params' must be an object");
  Fields s(sp ? *sp : kEmpty, "sampling_params.");
  refuse_n_greater_than_one(s);
  parse_sampling(s, out.input, context.model.vocab_size);
  out.input.sampling.logprobs = out.logprobs;
  out.input.stop.max_tokens = resolve_max_tokens(s, "max_new_tokens", context, out.input.prompt.size(), kDefaultMaxTokens, "text");
  return out;
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) {
  if (id < 0 || id >= tokenizer.vocab_size()) return "";
  return replace_invalid_utf8(tokenizer.token_bytes(id));
}

}  // namespace

ParsedGenerate parse_generate(ApiKind kind, std::string_view body, const ApiContext& context) {
  ojson parsed = ojson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw bad("", "the request body is not valid JSON");
  if (!parsed.is_object()) throw bad("", "the request body must be a JSON object");
  ParsedGenerate out;
  switch (kind) {
    case ApiKind::kCompletion: out = parse_completion(parsed, context); break;
    case ApiKind::kChat: out = parse_chat(parsed, context); break;
    case ApiKind::kNative: out = parse_native(parsed, context); break;
  }
  out.kind = kind;
  out.input.sampling.logprobs = out.logprobs;
  return out;
}

std::string error_json(const ApiError& error) {
  json j = {{"error",
             {{"message", error.what()},
              {"type", error.type},
              {"param", error.param.empty() ? json(nullptr) : json(error.param)},
              {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ResponseFormatter::ResponseFormatter(const ParsedGenerate& request, const ApiContext& context, std::string id)
    : kind_(request.kind),
      include_usage_(request.include_usage),
      logprobs_(request.logprobs),
      context_(context),
      id_(std::move(id)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()) {}

std::string ResponseFormatter::sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

json ResponseFormatter::chunk_base() const {
  const char* object = kind_ == ApiKind::kChat ? "chat.completion.chunk" : "text_completion";
  return json{{"id", id_}, {"object", object}, {"created", created_}, {"model", context_.model.id}};
}

json ResponseFormatter::usage_json(int prompt_tokens, int completion_tokens) const {
  return json{{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}, {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string ResponseFormatter::finish_reason_string(FinishReason reason) const { return finish_reason_name(reason); }

json ResponseFormatter::logprobs_json(const std::vector<int32_t>& ids, const std::vector<float>& logprobs, size_t text_offset) const {
  if (!logprobs_) return nullptr;
  if (kind_ == ApiKind::kChat) {
    json content = json::array();
    for (size_t i = 0; i < ids.size() && i < logprobs.size(); ++i) {
      std::string text = token_text(context_.tokenizer, ids[i]);
      json bytes = json::array();
      for (unsigned char c : text) bytes.push_back(c);
      content.push_back({{"token", text}, {"logprob", logprobs[i]}, {"bytes", bytes}, {"top_logprobs", json::array()}});
    }
    return json{{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (size_t i = 0; i < ids.size() && i < logprobs.size(); ++i) {
    std::string text = token_text(context_.tokenizer, ids[i]);
    tokens.push_back(text);
    token_logprobs.push_back(logprobs[i]);
    top.push_back(json{{text, logprobs[i]}});
    offsets.push_back(text_offset);
    text_offset += text.size();
  }
  return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

ApiError ResponseFormatter::error_for(FinishReason reason, const std::string& message) const {
  if (reason == FinishReason::kAbort) return ApiError(503, "the request was aborted: " + message, "service_unavailable", "", "aborted");
  return ApiError(500, "the request failed: " + message, "server_error", "", "internal_error");
}

std::string ResponseFormatter::sse_events(const OutputDelta& d) {
  std::string out;
  bool failed = d.finish && (*d.finish == FinishReason::kAbort || *d.finish == FinishReason::kError);
  bool has_content = !d.text.empty() || !d.token_ids.empty();
  if (kind_ == ApiKind::kChat && !sent_role_) {
    json chunk = chunk_base();
    chunk["choices"] = json::array({{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
    out += sse(chunk);
    sent_role_ = true;
  }
  json finish = d.finish && !failed ? json(finish_reason_string(*d.finish)) : json(nullptr);
  if (has_content || (d.finish && !failed)) {
    json chunk = chunk_base();
    json lp = logprobs_json(d.token_ids, d.logprobs, text_.size());
    switch (kind_) {
      case ApiKind::kChat: {
        json delta = json::object();
        if (has_content) delta["content"] = d.text;
        chunk["choices"] = json::array({{{"index", 0}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", finish}}});
        break;
      }
      case ApiKind::kCompletion:
        chunk["choices"] = json::array({{{"index", 0}, {"text", d.text}, {"logprobs", lp}, {"finish_reason", finish}}});
        break;
      case ApiKind::kNative:
        chunk = json{{"text", d.text}, {"output_ids", d.token_ids}};
        if (logprobs_) chunk["output_token_logprobs"] = d.logprobs;
        if (d.finish) {
          chunk["meta_info"] = {{"id", id_},
                                {"finish_reason", {{"type", finish_reason_string(*d.finish)}, {"matched", d.finish_message}}},
                                {"prompt_tokens", d.prompt_tokens},
                                {"completion_tokens", d.completion_tokens}};
        }
        break;
    }
    out += sse(chunk);
    text_ += d.text;
  }
  if (failed) out += "data: " + error_json(error_for(*d.finish, d.finish_message)) + "\n\n";
  if (d.finish) {
    if (include_usage_ && kind_ != ApiKind::kNative) {
      json chunk = chunk_base();
      chunk["choices"] = json::array();
      chunk["usage"] = usage_json(d.prompt_tokens, d.completion_tokens);
      out += sse(chunk);
    }
    out += "data: [DONE]\n\n";
  }
  return out;
}

void ResponseFormatter::accumulate(const OutputDelta& d) {
  text_ += d.text;
  token_ids_.insert(token_ids_.end(), d.token_ids.begin(), d.token_ids.end());
  token_logprobs_.insert(token_logprobs_.end(), d.logprobs.begin(), d.logprobs.end());
  last_.prompt_tokens = d.prompt_tokens;
  last_.completion_tokens = d.completion_tokens;
  if (d.finish) {
    last_.finish = d.finish;
    last_.finish_message = d.finish_message;
  }
}

std::pair<int, std::string> ResponseFormatter::final_response() const {
  FinishReason reason = last_.finish.value_or(FinishReason::kError);
  if (reason == FinishReason::kAbort || reason == FinishReason::kError) {
    ApiError error = error_for(reason, last_.finish_message);
    return {error.http_status, error_json(error)};
  }
  json body;
  json lp = logprobs_json(token_ids_, token_logprobs_, 0);
  switch (kind_) {
    case ApiKind::kChat:
      body = chunk_base();
      body["object"] = "chat.completion";
      body["choices"] = json::array({{{"index", 0},
                                      {"message", {{"role", "assistant"}, {"content", text_}}},
                                      {"logprobs", lp},
                                      {"finish_reason", finish_reason_string(reason)}}});
      body["usage"] = usage_json(last_.prompt_tokens, last_.completion_tokens);
      break;
    case ApiKind::kCompletion:
      body = chunk_base();
      body["choices"] = json::array({{{"index", 0}, {"text", text_}, {"logprobs", lp}, {"finish_reason", finish_reason_string(reason)}}});
      body["usage"] = usage_json(last_.prompt_tokens, last_.completion_tokens);
      break;
    case ApiKind::kNative:
      body = json{{"text", text_},
                  {"output_ids", token_ids_},
                  {"meta_info",
                   {{"id", id_},
                    {"finish_reason", {{"type", finish_reason_string(reason)}, {"matched", last_.finish_message}}},
                    {"prompt_tokens", last_.prompt_tokens},
                    {"completion_tokens", last_.completion_tokens}}}};
      if (logprobs_) body["output_token_logprobs"] = token_logprobs_;
      break;
  }
  return {200, body.dump(-1, ' ', false, json::error_handler_t::replace)};
}

}  // namespace ds::server
