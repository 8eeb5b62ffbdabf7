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

TEST(ChatFormat, MatchesJinjaTemplateOnFixtureCases) {
  const std::string path = std::string(DELTASERVE_SOURCE_DIR) + "/tests/data/tokenizer/chat_expected.jsonl";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path << " (regenerate with tests/reference/make_chat_fixture.py)";
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    const auto row = ordered_json::parse(line);
    const std::vector<ChatMessage> messages = chat_messages_from_openai(row.at("messages"));
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

TEST(ChatFormat, ConvertsOpenAiMessages) {
  const auto messages = chat_messages_from_openai(ordered_json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"}])"));
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0].content, "Hello there");
  EXPECT_EQ(messages[1].content, "");
  ASSERT_EQ(messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(messages[1].tool_calls[0].name, "f");
  EXPECT_EQ(messages[1].tool_calls[0].arguments, ordered_json("{\"x\": 1}"));
  EXPECT_EQ(format_chat(messages),
            "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", "
            "\"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n42\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatFormat, OpenAiConversionErrorsNameTheField) {
  auto error_of = [](const char* text) -> std::string {
    try {
      chat_messages_from_openai(ordered_json::parse(text));
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_THAT(error_of(R"({"role": "user"})"), ::testing::HasSubstr("messages must be an array"));
  EXPECT_THAT(error_of(R"([{"content": "x"}])"), ::testing::HasSubstr("messages[0].role"));
  EXPECT_THAT(error_of(R"([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])"),
              ::testing::HasSubstr("messages[0].content[0].type \"image_url\" is not supported"));
  EXPECT_THAT(error_of(R"([{"role": "user", "content": 5}])"), ::testing::HasSubstr("messages[0].content"));
  EXPECT_THAT(error_of(R"([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}])"),
              ::testing::HasSubstr("messages[0].tool_calls[0].function.name"));
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
