#include "server/tokenizer/chat_format.h"

#include <charconv>
#include <cmath>
#include <stdexcept>

namespace ds::server {

namespace {

void append_python_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[(c >> 4) & 0xF];
          out += kHex[c & 0xF];
        } else {
          out += c;  // ensure_ascii=False: everything else, UTF-8 included, stays as is
        }
    }
  }
  out += '"';
}

// Python's repr(float): the shortest round-tripping digits, positional for decimal exponents
// -4..15, otherwise scientific with a sign and at least two exponent digits.
void append_python_float(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  const std::string sci(buf, result.ptr);  // e.g. "-1.2345e+02"
  const size_t e_pos = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e_pos; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  const int exponent = std::stoi(sci.substr(e_pos + 1));
  if (negative) out += '-';
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      const auto int_len = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_len) {
        out += digits;
        out.append(int_len - digits.size(), '0');
        out += ".0";
      } else {
        out.append(digits, 0, int_len);
        out += '.';
        out.append(digits, int_len);
      }
    } else {
      out += "0.";
      out.append(static_cast<size_t>(-exponent - 1), '0');
      out += digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1);
    }
    const int magnitude = std::abs(exponent);
    out += exponent < 0 ? "e-" : "e+";
    if (magnitude < 10) out += '0';
    out += std::to_string(magnitude);
  }
}

void append_python_json(std::string& out, const nlohmann::ordered_json& value) {
  using value_t = nlohmann::ordered_json::value_t;
  switch (value.type()) {
    case value_t::null: out += "null"; break;
    case value_t::boolean: out += value.get<bool>() ? "true" : "false"; break;
    case value_t::number_integer: out += std::to_string(value.get<int64_t>()); break;
    case value_t::number_unsigned: out += std::to_string(value.get<uint64_t>()); break;
    case value_t::number_float: append_python_float(out, value.get<double>()); break;
    case value_t::string: append_python_string(out, value.get_ref<const std::string&>()); break;
    case value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& item : value) {
        if (!first) out += ", ";
        first = false;
        append_python_json(out, item);
      }
      out += ']';
      break;
    }
    case value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        if (!first) out += ", ";
        first = false;
        append_python_string(out, key);
        out += ": ";
        append_python_json(out, item);
      }
      out += '}';
      break;
    }
    case value_t::binary:
    case value_t::discarded:
      throw std::invalid_argument("chat formatting: a JSON value of binary/discarded type cannot be serialised");
  }
}

// Python str.strip/lstrip/rstrip with '\n' as the only stripped character.
std::string lstrip_newlines(std::string_view s) {
  const size_t b = s.find_first_not_of('\n');
  return b == std::string_view::npos ? std::string() : std::string(s.substr(b));
}

std::string rstrip_newlines(std::string_view s) {
  const size_t e = s.find_last_not_of('\n');
  return e == std::string_view::npos ? std::string() : std::string(s.substr(0, e + 1));
}

std::string strip_newlines(std::string_view s) { return lstrip_newlines(rstrip_newlines(s)); }

bool is_tool_response_wrapper(const std::string& content) {
  return content.starts_with("<tool_response>") && content.ends_with("</tool_response>");
}

// The template's split of an assistant message into visible content and reasoning.
struct AssistantParts {
  std::string content;
  std::string reasoning;
};

AssistantParts split_reasoning(const ChatMessage& message) {
  if (message.reasoning_content) return {message.content, *message.reasoning_content};
  constexpr std::string_view kClose = "</think>";
  const size_t last_close = message.content.rfind(kClose);
  if (last_close == std::string::npos) return {message.content, ""};
  AssistantParts parts;
  parts.content = lstrip_newlines(std::string_view(message.content).substr(last_close + kClose.size()));
  // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
  const std::string before_first_close = rstrip_newlines(std::string_view(message.content).substr(0, message.content.find(kClose)));
  constexpr std::string_view kOpen = "<think>";
  const size_t last_open = before_first_close.rfind(kOpen);
  parts.reasoning = lstrip_newlines(last_open == std::string::npos ? std::string_view(before_first_close)
                                                                    : std::string_view(before_first_close).substr(last_open + kOpen.size()));
  return parts;
}

void append_tool_calls(std::string& out, const std::vector<ChatToolCall>& calls, bool has_content) {
  for (size_t i = 0; i < calls.size(); ++i) {
    if ((i == 0 && has_content) || i > 0) out += '\n';
    out += "<tool_call>\n{\"name\": \"";
    out += calls[i].name;
    out += "\", \"arguments\": ";
    if (calls[i].arguments.is_string()) {
      out += calls[i].arguments.get_ref<const std::string&>();
    } else {
      append_python_json(out, calls[i].arguments);
    }
    out += "}\n</tool_call>";
  }
}

void append_tools_system_turn(std::string& out, const std::vector<ChatMessage>& messages,
                              const nlohmann::ordered_json& tools) {
  out += "<|im_start|>system\n";
  if (messages[0].role == "system") out += messages[0].content + "\n\n";
  out +=
      "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
  for (const auto& tool : tools) {
    out += '\n';
    append_python_json(out, tool);
  }
  out +=
      "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
      "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
      "<args-json-object>}\n</tool_call><|im_end|>\n";
}

// Index of the last user message that is a real query (not a wrapped tool response); the
// template keeps reasoning only for assistant turns after it.
size_t last_query_index(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    if (messages[i].role == "user" && !is_tool_response_wrapper(messages[i].content)) return i;
  }
  return messages.size() - 1;
}

void validate(const std::vector<ChatMessage>& messages, const ChatOptions& options) {
  if (messages.empty()) throw std::invalid_argument("chat formatting: messages must not be empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      throw std::invalid_argument("chat formatting: messages[" + std::to_string(i) + "].role \"" + role +
                                  "\" is not one of system, user, assistant, tool");
    }
  }
  if (!options.tools.is_null() && !options.tools.is_array()) {
    throw std::invalid_argument("chat formatting: tools must be an array");
  }
}

[[noreturn]] void bad_field(const std::string& field, const std::string& problem) {
  throw std::invalid_argument(field + " " + problem);
}

std::string content_text(const nlohmann::ordered_json& content, const std::string& field) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad_field(field, "must be a string, null or an array of content parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const auto& part = content[j];
    const std::string part_field = field + "[" + std::to_string(j) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      bad_field(part_field, "must be an object with a string \"type\"");
    }
    const std::string type = part["type"].get<std::string>();
    if (type != "text") bad_field(part_field + ".type", "\"" + type + "\" is not supported (text only)");
    if (!part.contains("text") || !part["text"].is_string()) bad_field(part_field + ".text", "must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

ChatToolCall tool_call_from_openai(const nlohmann::ordered_json& call, const std::string& field) {
  if (!call.is_object()) bad_field(field, "must be an object");
  const nlohmann::ordered_json& function = call.contains("function") ? call["function"] : call;
  const std::string function_field = call.contains("function") ? field + ".function" : field;
  if (!function.is_object() || !function.contains("name") || !function["name"].is_string()) {
    bad_field(function_field + ".name", "must be a string");
  }
  ChatToolCall tool_call{function["name"].get<std::string>(), nlohmann::ordered_json::object()};
  if (function.contains("arguments")) {
    const auto& arguments = function["arguments"];
    if (!arguments.is_string() && !arguments.is_object()) {
      bad_field(function_field + ".arguments", "must be a JSON string or an object");
    }
    tool_call.arguments = arguments;
  }
  return tool_call;
}

}  // namespace

std::vector<ChatMessage> chat_messages_from_openai(const nlohmann::ordered_json& messages) {
  if (!messages.is_array()) bad_field("messages", "must be an array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_field(field, "must be an object");
    if (!m.contains("role") || !m["role"].is_string()) bad_field(field + ".role", "must be a string");
    ChatMessage message;
    message.role = m["role"].get<std::string>();
    message.content = content_text(m.contains("content") ? m["content"] : nlohmann::ordered_json(), field + ".content");
    if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
      if (!m["reasoning_content"].is_string()) bad_field(field + ".reasoning_content", "must be a string");
      message.reasoning_content = m["reasoning_content"].get<std::string>();
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) bad_field(field + ".tool_calls", "must be an array");
      for (size_t j = 0; j < m["tool_calls"].size(); ++j) {
        message.tool_calls.push_back(tool_call_from_openai(m["tool_calls"][j], field + ".tool_calls[" + std::to_string(j) + "]"));
      }
    }
    out.push_back(std::move(message));
  }
  return out;
}

std::string python_json_dumps(const nlohmann::ordered_json& value) {
  std::string out;
  append_python_json(out, value);
  return out;
}

std::string format_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options) {
  validate(messages, options);
  std::string out;
  const bool has_tools = options.tools.is_array() && !options.tools.empty();
  if (has_tools) {
    append_tools_system_turn(out, messages, options.tools);
  } else if (messages[0].role == "system") {
    out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  }

  const size_t last_query = last_query_index(messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    const bool is_last = i + 1 == messages.size();
    if (message.role == "user" || (message.role == "system" && i > 0)) {
      out += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
    } else if (message.role == "assistant") {
      const AssistantParts parts = split_reasoning(message);
      if (i > last_query && (is_last || !parts.reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n" + strip_newlines(parts.reasoning) + "\n</think>\n\n" +
               lstrip_newlines(parts.content);
      } else {
        out += "<|im_start|>assistant\n" + parts.content;
      }
      append_tool_calls(out, message.tool_calls, !parts.content.empty());
      out += "<|im_end|>\n";
    } else if (message.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + message.content + "\n</tool_response>";
      if (is_last || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

}  // namespace ds::server
