// Drives one benchmark run: releases requests at their arrival times, holds them back while
// --max-concurrency requests are in flight, and collects what the backend observed.
#pragma once

#include <boost/asio/io_context.hpp>
#include <vector>

#include "bench/backend.h"
#include "bench/metrics.h"
#include "bench/workload.h"

namespace ds::bench {

struct RunResult {
  std::vector<RequestRecord> records;  // one per spec, in spec order
  double duration = 0;                 // seconds from the start to the last completion
};

// Runs `specs` (arrivals[i] seconds after the start; max_concurrency <= 0: unlimited) on `io`,
// which must not be running elsewhere. A request queued behind the concurrency limit is sent,
// and its latency measured, from when it leaves the queue (as SGLang's semaphore does).
RunResult run_requests(boost::asio::io_context& io, Backend& backend, const std::vector<RequestSpec>& specs,
                       const std::vector<double>& arrivals, int max_concurrency, bool show_progress);

}  // namespace ds::bench
