// What a benchmark reports: the summary table (laid out like SGLang's bench_serving), the JSON
// result file, and for --sweep a table and a gnuplot PNG of throughput against TPOT.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/metrics.h"

namespace ds::bench {

// The settings printed in the table's head and stored under "config" in the JSON file.
struct RunConfig {
  std::string backend;
  std::string model;
  double request_rate = 0;  // inf: all at once
  int max_concurrency = 0;  // <= 0: unlimited
};

std::string summary_table(const RunConfig& config, const Summary& summary);

// The summary (latencies in ms, as SGLang names them) and every request's record and latencies.
nlohmann::json summary_json(const Summary& summary);
nlohmann::json records_json(const std::vector<RequestRecord>& records);

struct SweepPoint {
  int max_concurrency = 0;
  Summary summary;
};
std::string sweep_table(const std::vector<SweepPoint>& points);
// Plots output token throughput against median TPOT, one labelled point per concurrency, with
// gnuplot (Debian gnuplot-nox). Throws naming what failed.
void plot_sweep(const std::vector<SweepPoint>& points, const std::string& title, const std::string& png_path);

}  // namespace ds::bench
