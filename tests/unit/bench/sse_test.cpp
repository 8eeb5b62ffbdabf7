// SSE framing on recorded byte streams, fed whole and split at every byte.
#include "bench/sse.h"

#include <gtest/gtest.h>

namespace ds::bench {
namespace {

// Events of `stream` when fed in pieces of `piece` bytes.
std::vector<std::string> events_in_pieces(const std::string& stream, size_t piece) {
  SseParser p;
  std::vector<std::string> all;
  for (size_t at = 0; at < stream.size(); at += piece) {
    auto got = p.feed(std::string_view(stream).substr(at, piece));
    all.insert(all.end(), got.begin(), got.end());
  }
  return all;
}

TEST(Sse, EventsWithLfCrlfAndCrLineEnds) {
  const std::string stream =
      "data: {\"a\":1}\n\n"
      ": keep-alive comment\r\n\r\n"
      "data: {\"b\":2}\r\n\r\n"
      "event: message\rdata:no-space\r\r"
      "data: line1\ndata: line2\n\n"
      "data: [DONE]\n\n";
  const std::vector<std::string> expected = {"{\"a\":1}", "{\"b\":2}", "no-space", "line1\nline2", "[DONE]"};
  for (size_t piece = 1; piece <= stream.size(); ++piece) {
    EXPECT_EQ(events_in_pieces(stream, piece), expected) << "pieces of " << piece << " bytes";
  }
}

TEST(Sse, SplitMidLineKeepsTheTail) {
  SseParser p;
  EXPECT_TRUE(p.feed("data: {\"choices\":[{\"te").empty());
  EXPECT_TRUE(p.has_partial_event());
  EXPECT_TRUE(p.feed("xt\":\"hi\"}]}\n").empty());
  EXPECT_TRUE(p.has_partial_event());  // data seen, event not closed
  auto events = p.feed("\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "{\"choices\":[{\"text\":\"hi\"}]}");
  EXPECT_FALSE(p.has_partial_event());
}

TEST(Sse, CrlfSplitBetweenFeedsIsOneLineBreak) {
  SseParser p;
  EXPECT_TRUE(p.feed("data: x\r").empty());
  EXPECT_TRUE(p.feed("\n").empty());  // the LF of the CRLF, not a blank line
  auto events = p.feed("\r\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "x");
}

TEST(Sse, EventWithoutDataIsSkipped) {
  SseParser p;
  EXPECT_TRUE(p.feed("event: ping\nid: 3\n\n").empty());
  EXPECT_EQ(p.feed("data:\n\n"), std::vector<std::string>{""});  // empty data is still an event
}

}  // namespace
}  // namespace ds::bench
