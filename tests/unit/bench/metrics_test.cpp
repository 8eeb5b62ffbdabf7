// The §7 metric definitions on hand-computed cases.
#include "bench/metrics.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace ds::bench {
namespace {

RequestRecord ok(int index, double send, std::vector<TokenChunk> chunks, int prompt_len = 10) {
  RequestRecord r;
  r.index = index;
  r.prompt_len = prompt_len;
  r.send_time = send;
  r.success = true;
  r.chunks = std::move(chunks);
  return r;
}

RequestRecord failed(int index, std::string reason) {
  RequestRecord r;
  r.index = index;
  r.prompt_len = 1000;
  r.send_time = 0.5;
  r.chunks = {{0.6, 1}, {0.9, 1}};  // tokens before the cut must not count
  r.error = std::move(reason);
  return r;
}

TEST(Metrics, RequestLatencyOfOneTokenPerChunk) {
  // sent at 1.0; tokens at 1.5, 1.7, 2.0, 2.1 → TTFT 0.5, E2E 1.1, TPOT 0.6/3 = 0.2.
  auto l = request_latency(ok(0, 1.0, {{1.5, 1}, {1.7, 1}, {2.0, 1}, {2.1, 1}}));
  EXPECT_DOUBLE_EQ(l.ttft, 0.5);
  EXPECT_DOUBLE_EQ(l.e2e, 1.1);
  ASSERT_TRUE(l.tpot.has_value());
  EXPECT_NEAR(*l.tpot, 0.2, 1e-12);
  ASSERT_EQ(l.itl.size(), 3u);
  EXPECT_NEAR(l.itl[0], 0.2, 1e-12);
  EXPECT_NEAR(l.itl[1], 0.3, 1e-12);
  EXPECT_NEAR(l.itl[2], 0.1, 1e-12);
  EXPECT_EQ(l.output_tokens, 4);
  EXPECT_EQ(l.input_tokens, 10);
}

TEST(Metrics, MultiTokenChunkSpreadsItsGap) {
  // A chunk of 3 tokens 0.6 s after the first: three ITLs of 0.2; they sum to e2e − ttft.
  auto l = request_latency(ok(0, 0.0, {{0.1, 2}, {0.7, 3}}));
  EXPECT_DOUBLE_EQ(l.ttft, 0.1);
  EXPECT_DOUBLE_EQ(l.e2e, 0.7);
  EXPECT_EQ(l.output_tokens, 5);
  EXPECT_NEAR(*l.tpot, 0.6 / 4, 1e-12);
  ASSERT_EQ(l.itl.size(), 3u);
  for (double v : l.itl) EXPECT_NEAR(v, 0.2, 1e-12);
}

TEST(Metrics, OneTokenRequestHasNoTpotNorItl) {
  auto l = request_latency(ok(0, 2.0, {{2.25, 1}}));
  EXPECT_DOUBLE_EQ(l.ttft, 0.25);
  EXPECT_DOUBLE_EQ(l.e2e, 0.25);
  EXPECT_FALSE(l.tpot.has_value());
  EXPECT_TRUE(l.itl.empty());
}

TEST(Metrics, UsageCountsWinOverChunks) {
  auto r = ok(0, 0.0, {{0.1, 1}, {0.5, 1}}, 7);
  r.usage_completion_tokens = 5;  // e.g. tokens whose text came in fewer chunks
  r.usage_prompt_tokens = 9;
  auto l = request_latency(r);
  EXPECT_EQ(l.output_tokens, 5);
  EXPECT_EQ(l.input_tokens, 9);
  EXPECT_NEAR(*l.tpot, 0.4 / 4, 1e-12);
}

TEST(Metrics, FailedOrEmptyRecordHasNoLatency) {
  EXPECT_THROW(request_latency(failed(3, "HTTP 400: too long")), std::invalid_argument);
  EXPECT_THROW(request_latency(ok(0, 0.0, {})), std::invalid_argument);
}

TEST(Metrics, DistributionInterpolatesLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = 2.5, 3.7, 3.97
  auto d = distribution({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_NEAR(d.p90, 3.7, 1e-12);
  EXPECT_NEAR(d.p99, 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(d.max, 4);
  EXPECT_EQ(d.count, 4u);
  auto one = distribution({7});
  EXPECT_DOUBLE_EQ(one.p99, 7);
  auto none = distribution({});
  EXPECT_EQ(none.count, 0u);
  EXPECT_DOUBLE_EQ(none.mean, 0);
}

TEST(Metrics, SummaryCountsFailuresWithoutAveragingThem) {
  std::vector<RequestRecord> records = {
      ok(0, 0.0, {{0.5, 1}, {0.7, 1}, {0.9, 1}}, 10),  // ttft 0.5, e2e 0.9, tpot 0.2, itl 0.2 0.2
      ok(1, 1.0, {{1.1, 1}}, 20),                      // ttft 0.1, e2e 0.1, one token: no tpot
      failed(2, "HTTP 400: prompt too long"),
      failed(3, "connect: Connection refused"),
      failed(4, "HTTP 400: prompt too long"),
  };
  Summary s = summarize(records, 2.0);
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 3);
  ASSERT_EQ(s.failures.size(), 2u);
  EXPECT_EQ(s.failures[0].reason, "HTTP 400: prompt too long");
  EXPECT_EQ(s.failures[0].count, 2);
  EXPECT_EQ(s.failures[1].reason, "connect: Connection refused");
  EXPECT_EQ(s.failures[1].count, 1);
  EXPECT_EQ(s.total_input_tokens, 30);
  EXPECT_EQ(s.total_output_tokens, 4);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(s.input_throughput, 15.0);
  EXPECT_DOUBLE_EQ(s.output_throughput, 2.0);
  EXPECT_DOUBLE_EQ(s.total_throughput, 17.0);
  EXPECT_NEAR(s.concurrency, (0.9 + 0.1) / 2.0, 1e-12);
  EXPECT_NEAR(s.ttft.mean, 0.3, 1e-12);
  EXPECT_NEAR(s.ttft.median, 0.3, 1e-12);
  EXPECT_NEAR(s.e2e.mean, 0.5, 1e-12);
  EXPECT_EQ(s.tpot.count, 1u);  // the 1-token request is left out of TPOT
  EXPECT_NEAR(s.tpot.mean, 0.2, 1e-12);
  EXPECT_EQ(s.itl.count, 2u);
  EXPECT_NEAR(s.itl.max, 0.2, 1e-12);
}

TEST(Metrics, SummaryRejectsEmptyDuration) { EXPECT_THROW(summarize({}, 0.0), std::invalid_argument); }

}  // namespace
}  // namespace ds::bench
