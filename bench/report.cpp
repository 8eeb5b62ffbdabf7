#include "bench/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace ds::bench {
namespace {

std::string row(const std::string& label, const std::string& value) { return fmt::format("{:<40} {:<10}\n", label, value); }
std::string row(const std::string& label, double value) { return fmt::format("{:<40} {:<10.2f}\n", label, value); }
// `title` centred in a 50-column rule of `fill` characters (Python's "{:=^50}").
std::string heading(const std::string& title, char fill) {
  size_t pad = title.size() < 50 ? 50 - title.size() : 0;
  return std::string(pad / 2, fill) + title + std::string(pad - pad / 2, fill) + "\n";
}

std::string latency_rows(const std::string& name, const Distribution& d, bool with_max) {
  std::string out;
  out += row("Mean " + name + " (ms):", d.mean * 1e3);
  out += row("Median " + name + " (ms):", d.median * 1e3);
  out += row("P90 " + name + " (ms):", d.p90 * 1e3);
  out += row("P99 " + name + " (ms):", d.p99 * 1e3);
  if (with_max) out += row("Max " + name + " (ms):", d.max * 1e3);
  return out;
}

std::string rate_text(double rate) { return std::isinf(rate) ? "inf" : fmt::format("{:g}", rate); }

nlohmann::json distribution_json(const std::string& name, const Distribution& d, bool with_max) {
  nlohmann::json j;
  j["mean_" + name + "_ms"] = d.mean * 1e3;
  j["median_" + name + "_ms"] = d.median * 1e3;
  j["p90_" + name + "_ms"] = d.p90 * 1e3;
  j["p99_" + name + "_ms"] = d.p99 * 1e3;
  if (with_max) j["max_" + name + "_ms"] = d.max * 1e3;
  return j;
}

// gnuplot strings are single-quoted: a quote inside would end them.
std::string quotable(std::string text) {
  std::replace(text.begin(), text.end(), '\'', '"');
  return text;
}

}  // namespace

std::string summary_table(const RunConfig& c, const Summary& s) {
  std::string out = heading(" Serving Benchmark Result ", '=');
  out += row("Backend:", c.backend);
  out += row("Model:", c.model.empty() ? "(served model)" : c.model);
  out += row("Traffic request rate:", rate_text(c.request_rate));
  out += row("Max request concurrency:", c.max_concurrency > 0 ? std::to_string(c.max_concurrency) : "not set");
  out += row("Successful requests:", std::to_string(s.completed));
  out += row("Failed requests:", std::to_string(s.failed));
  out += row("Benchmark duration (s):", s.duration);
  out += row("Total input tokens:", std::to_string(s.total_input_tokens));
  out += row("Total generated tokens:", std::to_string(s.total_output_tokens));
  out += row("Request throughput (req/s):", s.request_throughput);
  out += row("Input token throughput (tok/s):", s.input_throughput);
  out += row("Output token throughput (tok/s):", s.output_throughput);
  out += row("Total token throughput (tok/s):", s.total_throughput);
  out += row("Concurrency:", s.concurrency);
  out += heading("End-to-End Latency", '-');
  out += latency_rows("E2E Latency", s.e2e, false);
  out += heading("Time to First Token", '-');
  out += latency_rows("TTFT", s.ttft, false);
  out += heading("Time per Output Token (excl. 1st token)", '-');
  out += latency_rows("TPOT", s.tpot, false);
  out += heading("Inter-Token Latency", '-');
  out += latency_rows("ITL", s.itl, true);
  if (!s.failures.empty()) {
    out += heading("Failures", '-');
    for (const auto& f : s.failures) out += fmt::format("{:>6} x {}\n", f.count, f.reason);
  }
  out += std::string(50, '=') + "\n";
  return out;
}

nlohmann::json summary_json(const Summary& s) {
  nlohmann::json j;
  j["completed"] = s.completed;
  j["failed"] = s.failed;
  j["failures"] = nlohmann::json::array();
  for (const auto& f : s.failures) j["failures"].push_back({{"reason", f.reason}, {"count", f.count}});
  j["duration_s"] = s.duration;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["request_throughput"] = s.request_throughput;
  j["input_throughput"] = s.input_throughput;
  j["output_throughput"] = s.output_throughput;
  j["total_throughput"] = s.total_throughput;
  j["concurrency"] = s.concurrency;
  j.update(distribution_json("e2e_latency", s.e2e, false));
  j.update(distribution_json("ttft", s.ttft, false));
  j.update(distribution_json("tpot", s.tpot, false));
  j.update(distribution_json("itl", s.itl, true));
  j["tpot_count"] = s.tpot.count;
  j["itl_count"] = s.itl.count;
  return j;
}

nlohmann::json records_json(const std::vector<RequestRecord>& records) {
  auto out = nlohmann::json::array();
  for (const auto& r : records) {
    nlohmann::json j;
    j["index"] = r.index;
    j["success"] = r.success;
    j["error"] = r.error;
    j["prompt_len"] = r.prompt_len;
    j["requested_output_len"] = r.requested_output_len;
    j["input_tokens"] = input_tokens(r);
    j["output_tokens"] = output_tokens(r);
    j["send_time_s"] = r.send_time;
    auto times = nlohmann::json::array(), tokens = nlohmann::json::array();
    for (const auto& c : r.chunks) {
      times.push_back(c.time);
      tokens.push_back(c.tokens);
    }
    j["chunk_times_s"] = std::move(times);
    j["chunk_tokens"] = std::move(tokens);
    if (r.success) {
      RequestLatency l = request_latency(r);
      j["ttft_s"] = l.ttft;
      j["e2e_s"] = l.e2e;
      j["tpot_s"] = l.tpot ? nlohmann::json(*l.tpot) : nlohmann::json();
      j["itl_s"] = l.itl;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string sweep_table(const std::vector<SweepPoint>& points) {
  std::string out = fmt::format("{:>11} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}\n", "concurrency", "completed", "failed",
                                "req/s", "out tok/s", "median TTFT", "median TPOT", "median ITL");
  out += fmt::format("{:>11} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}\n", "", "", "", "", "", "(ms)", "(ms)", "(ms)");
  for (const auto& p : points) {
    const Summary& s = p.summary;
    out += fmt::format("{:>11} {:>9} {:>7} {:>12.2f} {:>12.2f} {:>12.2f} {:>12.2f} {:>12.2f}\n", p.max_concurrency,
                       s.completed, s.failed, s.request_throughput, s.output_throughput, s.ttft.median * 1e3,
                       s.tpot.median * 1e3, s.itl.median * 1e3);
  }
  return out;
}

void plot_sweep(const std::vector<SweepPoint>& points, const std::string& title, const std::string& png_path) {
  std::string data_path = png_path + ".dat";
  {
    std::ofstream data(data_path);
    if (!data) throw std::runtime_error("cannot write plot data " + data_path);
    data << "# max_concurrency median_tpot_ms output_throughput_tok_s\n";
    for (const auto& p : points)
      data << p.max_concurrency << ' ' << p.summary.tpot.median * 1e3 << ' ' << p.summary.output_throughput << '\n';
  }
  std::string script = fmt::format(
      "set terminal pngcairo size 900,600 noenhanced\n"
      "set output '{}'\n"
      "set title '{}'\n"
      "set xlabel 'median TPOT (ms)'\n"
      "set ylabel 'output throughput (tok/s)'\n"
      "set grid\n"
      "unset key\n"
      "plot '{}' using 2:3 with linespoints pt 7, '' using 2:3:(sprintf(' c=%d', $1)) with labels left offset 0.5,0.5\n",
      png_path, quotable(title), data_path);
  FILE* gnuplot = popen("gnuplot 2>&1", "w");
  if (!gnuplot) throw std::runtime_error("cannot start gnuplot (apt-get install gnuplot-nox)");
  std::fputs(script.c_str(), gnuplot);
  int status = pclose(gnuplot);
  std::remove(data_path.c_str());
  if (status != 0)
    throw std::runtime_error("gnuplot failed to write " + png_path + " (exit status " + std::to_string(status) +
                             "; is gnuplot-nox installed?)");
}

}  // namespace ds::bench
