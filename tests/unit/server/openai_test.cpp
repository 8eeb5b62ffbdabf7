// OpenAI request validation (status, param, message) and response shapes, without sockets.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "server/api/openai.h"

namespace ds::server {
namespace {

using json = nlohmann::json;

class NeverCalled : public StepExecutor {
 public:
  control::StepResult execute(const control::StepPlan&) override { throw std::logic_error("not in this test"); }
};

class OpenAiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::path dir = std::filesystem::path(DELTASERVE_SOURCE_DIR) / "data" / "tokenizer" / "qwen3";
    if (!std::filesystem::exists(dir / "tokenizer.json")) GTEST_SKIP() << "no tokenizer at " << dir;
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir.string()));
    EngineOptions o;
    o.scheduler.num_kv_pages = 16;
    o.scheduler.num_gdn_slots = 4;
    o.scheduler.kv_page_size = 8;
    o.scheduler.max_running_requests = 3;
    o.scheduler.max_context_len = 128;
    o.vocab_size = tokenizer_->vocab_size();
    engine_ = std::make_unique<Engine>(o, *tokenizer_, executor_, metrics_);
    ServedModel model{"tiny", "qwen3_5_text", 128, tokenizer_->vocab_size(), {151645}};
    context_ = std::make_unique<ApiContext>(ApiContext{*engine_, *tokenizer_, metrics_, model, ServerFacts{}, ""});
  }

  ApiError expect_error(ApiKind kind, const std::string& body) {
    try {
      parse_generate(kind, body, *context_);
    } catch (const ApiError& e) {
      return e;
    }
    ADD_FAILURE() << "accepted: " << body;
    return ApiError(0, "");
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  NeverCalled executor_;
  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ApiContext> context_;
};

TEST_F(OpenAiTest, ParsesACompletionRequest) {
  auto p = parse_generate(ApiKind::kCompletion,
                          R"({"model":"tiny","prompt":"Hello there","max_tokens":5,"temperature":0,"stop":["\n"],"seed":3,
                              "stream":true,"stream_options":{"include_usage":true},"logprobs":1,"ignore_eos":true})",
                          *context_);
  EXPECT_EQ(p.input.prompt, tokenizer_->encode("Hello there"));
  EXPECT_EQ(p.input.stop.max_tokens, 5);
  EXPECT_EQ(p.input.sampling.temperature, 0.f);
  EXPECT_EQ(p.input.sampling.seed, 3u);
  EXPECT_EQ(p.input.stop_strings, std::vector<std::string>{"\n"});
  EXPECT_TRUE(p.stream && p.include_usage && p.logprobs && p.input.sampling.logprobs && p.input.stop.ignore_eos);
  auto ids = parse_generate(ApiKind::kCompletion, R"({"prompt":[1,2,3]})", *context_);
  EXPECT_EQ(ids.input.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids.input.stop.max_tokens, 16);
}

TEST_F(OpenAiTest, ParsesAChatRequestThroughTheChatTemplate) {
  auto p = parse_generate(ApiKind::kChat, R"({"model":"tiny","messages":[{"role":"user","content":"Hi"}],"max_tokens":4})", *context_);
  EXPECT_EQ(p.input.prompt, tokenizer_->encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
  auto no_max = parse_generate(ApiKind::kChat, R"({"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]})", *context_);
  EXPECT_EQ(no_max.input.stop.max_tokens, 128 - static_cast<int>(no_max.input.prompt.size()));
}

TEST_F(OpenAiTest, RefusesMalformedRequestsNamingTheProblem) {
  auto e = expect_error(ApiKind::kCompletion, "{not json");
  EXPECT_EQ(e.http_status, 400);
  EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  e = expect_error(ApiKind::kCompletion, R"({"prompt":"x","max_tokens":"ten"})");
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_NE(std::string(e.what()).find("must be an integer"), std::string::npos);
  e = expect_error(ApiKind::kCompletion, R"({"prompt":"x","temperature":"hot"})");
  EXPECT_EQ(e.param, "temperature");
  e = expect_error(ApiKind::kCompletion, R"({"prompt":"x","n":2})");
  EXPECT_EQ(e.param, "n");
  EXPECT_NE(std::string(e.what()).find("n must be 1"), std::string::npos);
  e = expect_error(ApiKind::kCompletion, R"({"model":"gpt-4","prompt":"x"})");
  EXPECT_EQ(e.http_status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  e = expect_error(ApiKind::kCompletion, R"({"prompt":"x","max_tokens":500})");
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_NE(std::string(e.what()).find("maximum context length is 128 tokens"), std::string::npos);
  e = expect_error(ApiKind::kChat, R"({"messages":[]})");
  EXPECT_EQ(e.param, "messages");
  e = expect_error(ApiKind::kChat, R"({"messages":[{"role":"robot","content":"x"}]})");
  EXPECT_EQ(e.http_status, 400);
  e = expect_error(ApiKind::kCompletion, R"({"prompt":["a","b"]})");
  EXPECT_NE(std::string(e.what()).find("batched prompts"), std::string::npos);
  e = expect_error(ApiKind::kCompletion, R"({"prompt":[1, 99999999]})");
  EXPECT_EQ(e.param, "prompt");
  e = expect_error(ApiKind::kCompletion, R"({"prompt":"x","stop":[1]})");
  EXPECT_EQ(e.param, "stop");
  e = expect_error(ApiKind::kCompletion, R"([1,2])");
  EXPECT_NE(std::string(e.what()).find("JSON object"), std::string::npos);
  e = expect_error(ApiKind::kNative, R"({"sampling_params":{}})");
  EXPECT_EQ(e.param, "text");
}

TEST_F(OpenAiTest, ErrorJsonHasTheOpenAiShape) {
  json j = json::parse(error_json(ApiError(404, "nope", "invalid_request_error", "model", "model_not_found")));
  EXPECT_EQ(j["error"]["message"], "nope");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  json k = json::parse(error_json(ApiError(400, "bad")));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

std::vector<json> events(const std::string& sse, bool& done) {
  std::vector<json> out;
  size_t pos = 0;
  done = false;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    size_t end = sse.find("\n\n", pos);
    std::string data = sse.substr(pos + 6, end - pos - 6);
    if (data == "[DONE]") {
      done = true;
    } else {
      out.push_back(json::parse(data));
    }
    pos = end;
  }
  return out;
}

TEST_F(OpenAiTest, StreamsChatChunksWithRoleFinishAndUsage) {
  auto p = parse_generate(ApiKind::kChat, R"({"messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}})",
                          *context_);
  ResponseFormatter f(p, *context_, "chatcmpl-1");
  OutputDelta first;
  first.token_ids = {9707};
  first.text = "Hello";
  bool done = false;
  auto a = events(f.sse_events(first), done);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(a[1]["choices"][0]["delta"]["content"], "Hello");
  EXPECT_TRUE(a[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(done);
  OutputDelta last;
  last.finish = FinishReason::kLength;
  last.prompt_tokens = 9;
  last.completion_tokens = 1;
  auto b = events(f.sse_events(last), done);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(b[0]["object"], "chat.completion.chunk");
  EXPECT_TRUE(b[1]["choices"].empty());
  EXPECT_EQ(b[1]["usage"]["total_tokens"], 10);
  EXPECT_TRUE(done);
}

TEST_F(OpenAiTest, NonStreamingCompletionBodyAndFailures) {
  auto p = parse_generate(ApiKind::kCompletion, R"({"prompt":"Hi","logprobs":1})", *context_);
  ResponseFormatter f(p, *context_, "cmpl-1");
  OutputDelta d;
  d.token_ids = {9707};
  d.text = "Hello";
  d.logprobs = {-0.25f};
  d.finish = FinishReason::kStop;
  d.prompt_tokens = 1;
  d.completion_tokens = 1;
  f.accumulate(d);
  auto [status, body] = f.final_response();
  EXPECT_EQ(status, 200);
  json j = json::parse(body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["logprobs"]["token_logprobs"][0], -0.25);
  EXPECT_EQ(j["usage"]["completion_tokens"], 1);

  ResponseFormatter g(p, *context_, "cmpl-2");
  OutputDelta failed;
  failed.finish = FinishReason::kError;
  failed.finish_message = "worker rank 1 (pid 9) killed by signal 9 (Killed)";
  g.accumulate(failed);
  auto [fail_status, fail_body] = g.final_response();
  EXPECT_EQ(fail_status, 500);
  EXPECT_NE(fail_body.find("killed by signal 9"), std::string::npos);
}

}  // namespace
}  // namespace ds::server
