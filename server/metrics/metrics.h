// Prometheus text-format metrics of the front end (DESIGN.md §7 definitions: TTFT, ITL, E2E).
// Counters and histograms are updated from any thread; gauges are read at scrape time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace ds::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of metric `name`.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// The outcomes a request can have; "rejected" is a request refused before it ran (4xx, 503).
enum class Outcome { kStop, kLength, kAbort, kError, kRejected };
inline constexpr std::array<const char*, 5> kOutcomeNames = {"stop", "length", "abort", "error", "rejected"};

struct GaugeSnapshot {
  int running_requests = 0;
  int waiting_requests = 0;
  int kv_pages_used = 0;
  int kv_pages_total = 0;
  int gdn_slots_used = 0;
  int gdn_slots_total = 0;
  bool healthy = false;
};

class Metrics {
 public:
  Metrics();
  void count_request(Outcome outcome) { requests_[static_cast<size_t>(outcome)].fetch_add(1, std::memory_order_relaxed); }
  void add_prompt_tokens(uint64_t n) { prompt_tokens_.fetch_add(n, std::memory_order_relaxed); }
  void add_generation_tokens(uint64_t n) { generation_tokens_.fetch_add(n, std::memory_order_relaxed); }
  void count_preemption() { preemptions_.fetch_add(1, std::memory_order_relaxed); }
  void observe_ttft(double seconds) { ttft_.observe(seconds); }
  void observe_itl(double seconds) { itl_.observe(seconds); }
  void observe_e2e(double seconds) { e2e_.observe(seconds); }
  void observe_step(double seconds) { step_.observe(seconds); }
  // A step's wall time minus rank 0's plan-received-to-result-sent time: the control plane's cost.
  void observe_control_plane(double seconds) { control_plane_.observe(seconds); }

  uint64_t requests(Outcome outcome) const { return requests_[static_cast<size_t>(outcome)].load(); }
  std::string render(const GaugeSnapshot& gauges) const;

 private:
  std::array<std::atomic<uint64_t>, kOutcomeNames.size()> requests_{};
  std::atomic<uint64_t> prompt_tokens_{0};
  std::atomic<uint64_t> generation_tokens_{0};
  std::atomic<uint64_t> preemptions_{0};
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
  Histogram step_;
  Histogram control_plane_;
};

}  // namespace ds::server
