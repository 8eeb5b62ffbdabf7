// A serving protocol the benchmark can drive. Backends are asynchronous: `send` starts a request
// and returns at once, so thousands can be in flight on a handful of threads.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "bench/metrics.h"
#include "bench/workload.h"

namespace ds::bench {

// Seconds since the start of a run, read where an event is observed.
class Timeline {
 public:
  using Clock = std::chrono::steady_clock;
  Timeline() : origin_(Clock::now()) {}
  double now() const { return std::chrono::duration<double>(Clock::now() - origin_).count(); }
  Clock::time_point at(double seconds) const {
    return origin_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

 private:
  Clock::time_point origin_;
};

struct BackendOptions {
  std::string host;
  int port = 0;
  std::string model;  // empty: the served model (OpenAI: the first of /v1/models)
  bool ignore_eos = false;
  double request_timeout_s = 0;  // > 0: a request still streaming after this long fails
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Sends one request and records into `record` its send time, token chunks, usage and outcome,
  // then calls `done` exactly once, from any thread. `record` is touched by nothing else until
  // then; it and `spec` outlive the request.
  virtual void send(const RequestSpec& spec, RequestRecord& record, const Timeline& timeline,
                    std::function<void()> done) = 0;
};

}  // namespace ds::bench
