// Request bodies and the reading of streamed completions (SGLang/vLLM/deltaserve shaped).
#include "bench/openai_protocol.h"

#include <gtest/gtest.h>

namespace ds::bench {
namespace {

std::string event(const std::string& json) { return "data: " + json + "\n\n"; }
std::string text_chunk(const std::string& text) {
  return event(R"({"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":")" + text +
               R"(","finish_reason":null}]})");
}
const std::string kUsage =
    event(R"({"id":"cmpl-1","object":"text_completion","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}})");
const std::string kDone = "data: [DONE]\n\n";

TEST(OpenAiProtocol, RequestBodyWithTokenIdsAndIgnoreEos) {
  RequestSpec spec{0, std::vector<uint32_t>{5, 6, 7}, 3, 16};
  auto body = completion_request_body(spec, "m", true);
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["prompt"], nlohmann::json::parse("[5,6,7]"));
  EXPECT_EQ(body["max_tokens"], 16);
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["ignore_eos"], true);
  EXPECT_EQ(body["temperature"], 0.0);
}

TEST(OpenAiProtocol, RequestBodyWithTextAndEos) {
  RequestSpec spec{1, std::string("hello world"), 2, 4};
  auto body = completion_request_body(spec, "m", false);
  EXPECT_EQ(body["prompt"], "hello world");
  EXPECT_FALSE(body.contains("ignore_eos"));
}

TEST(OpenAiProtocol, StreamOfTextChunksWithUsage) {
  // The last content chunk carries finish_reason with empty text: not a token.
  const std::string stream = text_chunk("a") + text_chunk(" b") + text_chunk("c") +
                             event(R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})") + kUsage + kDone;
  for (size_t piece : {size_t(1), size_t(7), stream.size()}) {
    RequestRecord r;
    CompletionStreamReader reader(r);
    double t = 0;
    for (size_t at = 0; at < stream.size(); at += piece) {
      t += 1;
      reader.feed(std::string_view(stream).substr(at, piece), t);
    }
    EXPECT_EQ(reader.state(), CompletionStreamReader::State::kDone);
    EXPECT_TRUE(r.success);
    EXPECT_EQ(r.chunks.size(), 3u);
    EXPECT_EQ(r.usage_prompt_tokens, 12);
    EXPECT_EQ(r.usage_completion_tokens, 3);
    EXPECT_EQ(output_tokens(r), 3);
  }
}

TEST(OpenAiProtocol, ChunkTimesAreArrivalTimesOfTheirLastByte) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  std::string first = text_chunk("x");
  reader.feed(first.substr(0, 10), 1.0);
  reader.feed(first.substr(10), 2.0);  // the event completes here
  reader.feed(text_chunk("y") + text_chunk("z"), 3.0);
  ASSERT_EQ(r.chunks.size(), 3u);
  EXPECT_DOUBLE_EQ(r.chunks[0].time, 2.0);
  EXPECT_DOUBLE_EQ(r.chunks[1].time, 3.0);
  EXPECT_DOUBLE_EQ(r.chunks[2].time, 3.0);
  EXPECT_EQ(reader.state(), CompletionStreamReader::State::kStreaming);
}

TEST(OpenAiProtocol, TokenIdsInAChunkCountEachToken) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  reader.feed(event(R"({"choices":[{"text":"","token_ids":[1,2,3]}]})") + kDone, 1.0);
  ASSERT_EQ(r.chunks.size(), 1u);
  EXPECT_EQ(r.chunks[0].tokens, 3);
  EXPECT_EQ(output_tokens(r), 3);
}

TEST(OpenAiProtocol, EmptyTextBeforeTheFinishIsAToken) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  reader.feed(event(R"({"choices":[{"text":"","finish_reason":null}]})") + text_chunk("\u00e9") +
                  event(R"({"choices":[{"text":"","finish_reason":"length"}]})") + kDone,
              1.0);
  EXPECT_EQ(r.chunks.size(), 2u);
  EXPECT_TRUE(r.success);
}

TEST(OpenAiProtocol, StreamCutBeforeDoneFails) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  reader.feed(text_chunk("a") + "data: {\"cho", 1.0);
  EXPECT_EQ(reader.end_of_body(), CompletionStreamReader::State::kFailed);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.error, "stream ended before [DONE]");
}

TEST(OpenAiProtocol, ErrorEventFails) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  reader.feed(text_chunk("a") + event(R"({"error":{"message":"worker died","type":"server_error"}})") + kDone, 1.0);
  EXPECT_EQ(reader.state(), CompletionStreamReader::State::kFailed);
  EXPECT_EQ(r.error, "stream error: worker died");
  EXPECT_FALSE(r.success);  // the [DONE] after the error does not revive it
}

TEST(OpenAiProtocol, DoneWithoutTokensFails) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  EXPECT_EQ(reader.feed(kUsage + kDone, 1.0), CompletionStreamReader::State::kFailed);
  EXPECT_EQ(r.error, "stream completed without any token");
}

TEST(OpenAiProtocol, NonJsonEventFails) {
  RequestRecord r;
  CompletionStreamReader reader(r);
  EXPECT_EQ(reader.feed(event("oops"), 1.0), CompletionStreamReader::State::kFailed);
  EXPECT_NE(r.error.find("not a JSON object"), std::string::npos);
}

TEST(OpenAiProtocol, HttpErrorReason) {
  EXPECT_EQ(http_error_reason(400, R"({"error":{"message":"prompt has 9000 tokens; the limit is 4096","type":"invalid_request_error","param":"prompt","code":null}})"),
            "HTTP 400: prompt has 9000 tokens; the limit is 4096");
  EXPECT_EQ(http_error_reason(503, "Service Unavailable\r\n"), "HTTP 503: Service Unavailable");
  EXPECT_EQ(http_error_reason(404, ""), "HTTP 404");
}

}  // namespace
}  // namespace ds::bench
