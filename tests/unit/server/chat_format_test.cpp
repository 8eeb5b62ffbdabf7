// Qwen chat formatting: byte-for-byte equal to the Jinja chat_template of Qwen3's
// tokenizer_config.json, rendered by tests/reference/make_chat_fixture.py into
// tests/data/tokenizer/chat_expected.jsonl; plus hand-written cases and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "server/tokenizer/chat_format.h"

namespace ds::server {
namespace {

using ordered_json = nlohmann::ordered_json;

ChatMessage message_from_json(const ordered_json& m) {
  ChatMessage message;
  message.role = m.at("role").get<std::string>();
  message.content = m.value("content", "");
  if (m.contains("reasoning_content")) message.reasoning_content = m["reasoning_content"].get<std::string>();
  if (m.contains("tool_calls")) {
    for (const auto& call : m["tool_calls"]) {
      const ordered_json& function = call.contains("function") ? call["function"] : call;
      message.tool_calls.push_back({function.at("name").get<std::string>(), function.at("arguments")});
    }
  }
  return message;
}

TEST(ChatFormat, MatchesJinjaTemplateOnFixtureCases) {
  const std::string path = std::string(DELTASERVE_SOURCE_DIR) + "/tests/data/tokenizer/chat_expected.jsonl";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path << " (regenerate with tests/reference/make_chat_fixture.py)";
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    const auto row = ordered_json::parse(line);
    std::vector<ChatMessage> messages;
    for (const auto& m : row.at("messages")) messages.push_back(message_from_json(m));
    ChatOptions options;
    options.add_generation_prompt = row.at("add_generation_prompt").get<bool>();
    options.enable_thinking = row.value("enable_thinking", true);
    if (row.contains("tools")) options.tools = row["tools"];
    EXPECT_EQ(format_chat(messages, options), row.at("expected").get<std::string>()) << "case " << row.at("name");
    ++cases;
  }
  EXPECT_GE(cases, 10);
}

TEST(ChatFormat, GenerationPromptWithAndWithoutThinking) {
  const std::vector<ChatMessage> messages = {{"system", "Be terse.", {}, {}}, {"user", "Hi", {}, {}}};
  EXPECT_EQ(format_chat(messages),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  ChatOptions no_thinking;
  no_thinking.enable_thinking = false;
  EXPECT_EQ(format_chat(messages, no_thinking),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "<think>\n\n</think>\n\n");
  ChatOptions no_prompt;
  no_prompt.add_generation_prompt = false;
  EXPECT_EQ(format_chat(messages, no_prompt), "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatFormat, EmptyToolsArrayMeansNoToolsBlock) {
  ChatOptions options;
  options.tools = ordered_json::array();
  EXPECT_EQ(format_chat({{"user", "x", {}, {}}}, options), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatFormat, RejectsBadInput) {
  EXPECT_THROW(format_chat({}), std::invalid_argument);
  try {
    format_chat({{"user", "a", {}, {}}, {"developer", "b", {}, {}}});
    FAIL() << "unknown role accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("messages[1].role \"developer\""));
  }
  ChatOptions options;
  options.tools = ordered_json::object();
  EXPECT_THROW(format_chat({{"user", "a", {}, {}}}, options), std::invalid_argument);
}

TEST(PythonJsonDumps, MatchesPythonJsonDumpsFormatting) {
  EXPECT_EQ(python_json_dumps(ordered_json::parse(R"({"b": 1, "a": [true, null, "x"]})")),
            R"({"b": 1, "a": [true, null, "x"]})");
  EXPECT_EQ(python_json_dumps(ordered_json::parse(R"([1.0, 0.5, 1e-5, 1e16, 123456789012345.6, -0.0001, 2.5e-300])")),
            "[1.0, 0.5, 1e-05, 1e+16, 123456789012345.6, -0.0001, 2.5e-300]");
  EXPECT_EQ(python_json_dumps(ordered_json("é\"\\\n\x01\x7f")), "\"é\\\"\\\\\\n\\u0001\x7f\"");
  EXPECT_EQ(python_json_dumps(ordered_json::object()), "{}");
  EXPECT_EQ(python_json_dumps(ordered_json::array()), "[]");
}

}  // namespace
}  // namespace ds::server
