#include "server/metrics/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace ds::server {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard lock(mutex_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  std::lock_guard lock(mutex_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative, name, sum_, name, count_);
}

namespace {

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void gauge(std::string& out, const char* name, const char* help, double value) {
  header(out, name, "gauge", help);
  out += fmt::format("{} {}\n", name, value);
}

}  // namespace

Metrics::Metrics() : ttft_(latency_buckets()), itl_(latency_buckets()), e2e_(latency_buckets()), step_(latency_buckets()),
      control_plane_({0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0}) {}

std::string Metrics::render(const GaugeSnapshot& g) const {
  std::string out;
  header(out, "deltaserve_requests_total", "counter", "Requests by outcome (stop, length, abort, error, rejected).");
  for (size_t i = 0; i < kOutcomeNames.size(); ++i) {
    out += fmt::format("deltaserve_requests_total{{outcome=\"{}\"}} {}\n", kOutcomeNames[i], requests_[i].load());
  }
  header(out, "deltaserve_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.");
  out += fmt::format("deltaserve_prompt_tokens_total {}\n", prompt_tokens_.load());
  header(out, "deltaserve_generation_tokens_total", "counter", "Generated tokens.");
  out += fmt::format("deltaserve_generation_tokens_total {}\n", generation_tokens_.load());
  header(out, "deltaserve_preemptions_total", "counter", "Sequences preempted for lack of KV pages (recomputed later).");
  out += fmt::format("deltaserve_preemptions_total {}\n", preemptions_.load());
  header(out, "deltaserve_time_to_first_token_seconds", "histogram", "Time to first token.");
  ttft_.render("deltaserve_time_to_first_token_seconds", out);
  header(out, "deltaserve_inter_token_latency_seconds", "histogram", "Gap between consecutive tokens of a request.");
  itl_.render("deltaserve_inter_token_latency_seconds", out);
  header(out, "deltaserve_e2e_request_latency_seconds", "histogram", "Arrival to last token.");
  e2e_.render("deltaserve_e2e_request_latency_seconds", out);
  header(out, "deltaserve_step_seconds", "histogram", "One scheduler step: plan sent to result applied.");
  step_.render("deltaserve_step_seconds", out);
  header(out, "deltaserve_control_plane_seconds", "histogram",
         "Per step: front-end wall time minus rank 0's plan-to-result time (plan and result transport, scheduling on the worker).");
  control_plane_.render("deltaserve_control_plane_seconds", out);
  gauge(out, "deltaserve_running_requests", "Requests running on the workers.", g.running_requests);
  gauge(out, "deltaserve_waiting_requests", "Requests waiting for admission.", g.waiting_requests);
  gauge(out, "deltaserve_kv_pages_used", "KV-cache pages in use.", g.kv_pages_used);
  gauge(out, "deltaserve_kv_pages_total", "KV-cache pages in the pool.", g.kv_pages_total);
  gauge(out, "deltaserve_gdn_slots_used", "GDN state slots in use.", g.gdn_slots_used);
  gauge(out, "deltaserve_gdn_slots_total", "GDN state slots in the pool (scratch slot excluded).", g.gdn_slots_total);
  gauge(out, "deltaserve_healthy", "1 while every worker is up.", g.healthy ? 1 : 0);
  return out;
}

}  // namespace ds::server
