// The result file and the summary table carry the §7 numbers under their documented names.
#include "bench/report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace ds::bench {
namespace {

std::vector<RequestRecord> two_ok_one_failed() {
  RequestRecord a;
  a.index = 0;
  a.prompt_len = 10;
  a.requested_output_len = 3;
  a.success = true;
  a.send_time = 0.0;
  a.chunks = {{0.5, 1}, {0.7, 1}, {0.9, 1}};
  RequestRecord b = a;
  b.index = 1;
  b.send_time = 1.0;
  b.chunks = {{1.1, 1}};
  b.requested_output_len = 1;
  RequestRecord c;
  c.index = 2;
  c.prompt_len = 999;
  c.error = "HTTP 400: too long";
  return {a, b, c};
}

TEST(Report, SummaryJsonInMillisecondsWithSglangNames) {
  auto j = summary_json(summarize(two_ok_one_failed(), 2.0));
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["failures"][0]["reason"], "HTTP 400: too long");
  EXPECT_NEAR(j["mean_ttft_ms"].get<double>(), 300.0, 1e-9);
  EXPECT_NEAR(j["median_e2e_latency_ms"].get<double>(), 500.0, 1e-9);
  EXPECT_NEAR(j["mean_tpot_ms"].get<double>(), 200.0, 1e-9);
  EXPECT_NEAR(j["max_itl_ms"].get<double>(), 200.0, 1e-9);
  EXPECT_EQ(j["tpot_count"], 1);
  EXPECT_DOUBLE_EQ(j["output_throughput"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j["duration_s"].get<double>(), 2.0);
}

TEST(Report, RecordsJsonHasLatenciesOnlyForSuccesses) {
  auto j = records_json(two_ok_one_failed());
  ASSERT_EQ(j.size(), 3u);
  EXPECT_NEAR(j[0]["ttft_s"].get<double>(), 0.5, 1e-12);
  EXPECT_EQ(j[0]["itl_s"].size(), 2u);
  EXPECT_EQ(j[0]["chunk_tokens"], nlohmann::json::parse("[1,1,1]"));
  EXPECT_TRUE(j[1]["tpot_s"].is_null());  // one output token
  EXPECT_FALSE(j[2]["success"].get<bool>());
  EXPECT_EQ(j[2]["error"], "HTTP 400: too long");
  EXPECT_FALSE(j[2].contains("ttft_s"));
}

TEST(Report, TableShowsCountsRateAndFailures) {
  std::string table = summary_table({"grpc", "tiny", INFINITY, 0}, summarize(two_ok_one_failed(), 2.0));
  EXPECT_NE(table.find("Successful requests:                     2"), std::string::npos) << table;
  EXPECT_NE(table.find("Traffic request rate:                    inf"), std::string::npos) << table;
  EXPECT_NE(table.find("Max request concurrency:                 not set"), std::string::npos) << table;
  EXPECT_NE(table.find("Mean TTFT (ms):                          300.00"), std::string::npos) << table;
  EXPECT_NE(table.find("1 x HTTP 400: too long"), std::string::npos) << table;
  EXPECT_EQ(table.find(" Serving Benchmark Result "), 12u);  // centred in 50 columns like SGLang's
}

TEST(Report, SweepTableHasOneRowPerConcurrency) {
  Summary s = summarize(two_ok_one_failed(), 2.0);
  std::string table = sweep_table({{1, s}, {16, s}});
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 4);
  EXPECT_NE(table.find("\n         16 "), std::string::npos) << table;
}

}  // namespace
}  // namespace ds::bench
