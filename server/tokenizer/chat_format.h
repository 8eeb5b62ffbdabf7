// ChatML prompt formatting for the Qwen family: a C++ rendering of the chat_template in Qwen3's
// tokenizer_config.json (data/tokenizer/qwen3/tokenizer_config.json), byte for byte:
//   * optional system turn; with tools, a system turn holding the system content (if the first
//     message is a system message) and the "# Tools" block listing each tool as JSON
//     (Python json.dumps style: ", " and ": " separators, non-ASCII kept, key order kept);
//   * user and later system turns as <|im_start|>role\ncontent<|im_end|>\n;
//   * assistant turns, with reasoning (<think>…</think>) kept only after the last real user
//     query, and tool calls as <tool_call>\n{"name": …, "arguments": …}\n</tool_call>;
//   * consecutive tool messages grouped into one user turn of <tool_response> blocks;
//   * add_generation_prompt → "<|im_start|>assistant\n", plus "<think>\n\n</think>\n\n" when
//     enable_thinking is false (Qwen3's "no thinking" switch).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds::server {

struct ChatToolCall {
  std::string name;
  // A JSON string is inserted verbatim (OpenAI sends arguments as a string of JSON); any other
  // JSON value (object) is serialised Python-json.dumps style. ordered_json keeps key order.
  nlohmann::ordered_json arguments = nlohmann::ordered_json::object();
};

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant" | "tool"; others are rejected
  std::string content;  // OpenAI content-part arrays must be flattened to text by the caller
  std::optional<std::string> reasoning_content;  // assistant only; else split from <think>…</think>
  std::vector<ChatToolCall> tool_calls;          // assistant only
};

struct ChatOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = true;  // false → the empty think block after the generation prompt
  // Array of tool definitions (as the client sent them, e.g. {"type":"function","function":{…}}),
  // or null / empty array for none. Parse request bodies with nlohmann::ordered_json so the
  // tools keep the client's key order, as the Hugging Face template does.
  nlohmann::ordered_json tools = nullptr;
};

// Throws std::invalid_argument for an empty message list, an unknown role, or tools that are not
// an array.
std::string format_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options = {});

// The "messages" array of an OpenAI chat completion request → ChatMessages. content may be a
// string, null (e.g. an assistant turn with only tool_calls) or an array of {"type": "text",
// "text": ...} parts (concatenated); tool_calls entries are {"type": "function", "function":
// {"name", "arguments"}} with arguments a JSON string or object. Throws std::invalid_argument
// naming the offending field, e.g. "messages[2].content[0].type \"image_url\" is not supported".
std::vector<ChatMessage> chat_messages_from_openai(const nlohmann::ordered_json& messages);

// Python json.dumps(value, ensure_ascii=False) text (separators ", " and ": "), as Jinja's tojson
// in transformers produces. Exposed for tests.
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace ds::server
