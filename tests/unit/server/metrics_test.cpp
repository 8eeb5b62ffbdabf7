#include <gtest/gtest.h>

#include "server/metrics/metrics.h"

namespace ds::server {
namespace {

TEST(Metrics, RendersCountersHistogramsAndGaugesInPrometheusText) {
  Metrics m;
  m.count_request(Outcome::kStop);
  m.count_request(Outcome::kStop);
  m.count_request(Outcome::kRejected);
  m.add_prompt_tokens(7);
  m.add_generation_tokens(3);
  m.observe_ttft(0.003);
  m.observe_ttft(100);
  GaugeSnapshot g;
  g.running_requests = 2;
  g.kv_pages_used = 5;
  g.kv_pages_total = 10;
  g.healthy = true;
  std::string text = m.render(g);
  EXPECT_NE(text.find("deltaserve_requests_total{outcome=\"stop\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_requests_total{outcome=\"rejected\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_requests_total{outcome=\"error\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_prompt_tokens_total 7\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_generation_tokens_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_time_to_first_token_seconds_bucket{le=\"0.0025\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_time_to_first_token_seconds_bucket{le=\"80\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_time_to_first_token_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE deltaserve_time_to_first_token_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_running_requests 2\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_kv_pages_used 5\n"), std::string::npos);
  EXPECT_NE(text.find("deltaserve_healthy 1\n"), std::string::npos);
}

}  // namespace
}  // namespace ds::server
