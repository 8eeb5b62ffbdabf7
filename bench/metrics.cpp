#include "bench/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

namespace ds::bench {

int output_tokens(const RequestRecord& r) {
  if (r.usage_completion_tokens) return *r.usage_completion_tokens;
  int sum = 0;
  for (const auto& c : r.chunks) sum += c.tokens;
  return sum;
}

int input_tokens(const RequestRecord& r) { return r.usage_prompt_tokens.value_or(r.prompt_len); }

RequestLatency request_latency(const RequestRecord& r) {
  if (!r.success) throw std::invalid_argument("request " + std::to_string(r.index) + " failed: no latency");
  if (r.chunks.empty()) throw std::invalid_argument("request " + std::to_string(r.index) + " received no token");
  RequestLatency l;
  l.input_tokens = input_tokens(r);
  l.output_tokens = output_tokens(r);
  l.ttft = r.chunks.front().time - r.send_time;
  l.e2e = r.chunks.back().time - r.send_time;
  if (l.output_tokens > 1) l.tpot = (l.e2e - l.ttft) / (l.output_tokens - 1);
  for (size_t i = 1; i < r.chunks.size(); ++i) {
    int k = r.chunks[i].tokens;
    if (k <= 0) continue;
    double gap = r.chunks[i].time - r.chunks[i - 1].time;
    l.itl.insert(l.itl.end(), k, gap / k);
  }
  return l;
}

static double percentile(const std::vector<double>& sorted, double q) {
  double rank = q / 100.0 * double(sorted.size() - 1);
  size_t lo = size_t(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - double(lo));
}

Distribution distribution(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = values.size();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  d.median = percentile(values, 50);
  d.p90 = percentile(values, 90);
  d.p99 = percentile(values, 99);
  d.max = values.back();
  return d;
}

static std::vector<FailureCount> count_failures(const std::vector<RequestRecord>& records) {
  std::map<std::string, int> by_reason;
  for (const auto& r : records)
    if (!r.success) ++by_reason[r.error.empty() ? "unknown error" : r.error];
  std::vector<FailureCount> out;
  for (auto& [reason, count] : by_reason) out.push_back({reason, count});
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.count > b.count; });
  return out;
}

Summary summarize(const std::vector<RequestRecord>& records, double duration) {
  if (!(duration > 0)) throw std::invalid_argument("benchmark duration must be positive, got " + std::to_string(duration));
  Summary s;
  std::vector<double> ttft, tpot, itl, e2e;
  double e2e_sum = 0;
  for (const auto& r : records) {
    if (!r.success) {
      ++s.failed;
      continue;
    }
    RequestLatency l = request_latency(r);
    ++s.completed;
    s.total_input_tokens += l.input_tokens;
    s.total_output_tokens += l.output_tokens;
    ttft.push_back(l.ttft);
    e2e.push_back(l.e2e);
    e2e_sum += l.e2e;
    if (l.tpot) tpot.push_back(*l.tpot);
    itl.insert(itl.end(), l.itl.begin(), l.itl.end());
  }
  s.failures = count_failures(records);
  s.duration = duration;
  s.request_throughput = s.completed / duration;
  s.input_throughput = double(s.total_input_tokens) / duration;
  s.output_throughput = double(s.total_output_tokens) / duration;
  s.total_throughput = double(s.total_input_tokens + s.total_output_tokens) / duration;
  s.concurrency = e2e_sum / duration;
  s.ttft = distribution(std::move(ttft));
  s.tpot = distribution(std::move(tpot));
  s.itl = distribution(std::move(itl));
  s.e2e = distribution(std::move(e2e));
  return s;
}

}  // namespace ds::bench
