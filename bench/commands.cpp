#include "bench/commands.h"

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/grpc_backend.h"
#include "bench/openai_backend.h"
#include "bench/report.h"
#include "bench/runner.h"

namespace ds::bench {
namespace {

struct BenchOptions {
  std::string backend = "grpc";
  std::string host = "127.0.0.1";
  int port = 0;
  std::string model;
  std::string dataset = "random";
  std::string dataset_path;
  int num_prompts = 1000;
  int random_input_len = 1024;
  int random_output_len = 1024;
  double random_range_ratio = 0.0;
  std::string prompt_format = "ids";
  uint32_t token_id_min = 1000;  // above the special and byte tokens of common vocabularies
  uint32_t token_id_max = 100000;
  int shared_prefix_len = 0;
  int shared_prefix_groups = 1;
  std::string request_rate = "inf";
  int max_concurrency = 0;
  uint64_t seed = 1;
  bool ignore_eos = false;
  int warmup_requests = 1;
  double request_timeout_s = 0;
  std::string output_file;
  std::vector<int> sweep;
  std::string plot;
};

double parse_rate(const std::string& text) {
  if (text == "inf" || text == "INF") return std::numeric_limits<double>::infinity();
  size_t used = 0;
  double rate = 0;
  try {
    rate = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(rate > 0))
    throw std::invalid_argument("--request-rate must be a positive number of requests/s or inf, got '" + text + "'");
  return rate;
}

// Every in-flight HTTP request holds a socket: allow as many as the hard limit.
void raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::vector<RequestSpec> make_requests(const BenchOptions& o, std::mt19937_64& rng) {
  if (o.dataset == "jsonl") {
    if (o.dataset_path.empty()) throw std::invalid_argument("--dataset jsonl needs --dataset-path");
    return jsonl_requests(o.dataset_path, o.num_prompts, o.random_output_len);
  }
  if (o.dataset == "shared-prefix" && o.shared_prefix_len < 1)
    throw std::invalid_argument("--dataset shared-prefix needs --shared-prefix-len >= 1");
  RandomOptions r;
  r.num_prompts = o.num_prompts;
  r.input_len = o.random_input_len;
  r.output_len = o.random_output_len;
  r.range_ratio = o.random_range_ratio;
  r.format = o.prompt_format == "text" ? PromptFormat::kText : PromptFormat::kTokenIds;
  r.token_id_min = o.token_id_min;
  r.token_id_max = o.token_id_max;
  r.shared_prefix_len = o.dataset == "shared-prefix" ? o.shared_prefix_len : 0;
  r.shared_prefix_groups = o.shared_prefix_groups;
  return random_requests(r, rng);
}

nlohmann::json config_json(const BenchOptions& o, const std::string& model) {
  nlohmann::json c;
  c["backend"] = o.backend;
  c["host"] = o.host;
  c["port"] = o.port;
  c["model"] = model;
  c["dataset"] = o.dataset;
  c["dataset_path"] = o.dataset_path;
  c["num_prompts"] = o.num_prompts;
  c["random_input_len"] = o.random_input_len;
  c["random_output_len"] = o.random_output_len;
  c["random_range_ratio"] = o.random_range_ratio;
  c["prompt_format"] = o.prompt_format;
  c["token_id_range"] = {o.token_id_min, o.token_id_max};
  c["shared_prefix_len"] = o.shared_prefix_len;
  c["shared_prefix_groups"] = o.shared_prefix_groups;
  c["request_rate"] = o.request_rate;
  c["max_concurrency"] = o.max_concurrency;
  c["seed"] = o.seed;
  c["ignore_eos"] = o.ignore_eos;
  c["warmup_requests"] = o.warmup_requests;
  c["request_timeout_s"] = o.request_timeout_s;
  return c;
}

class Benchmark {
 public:
  explicit Benchmark(BenchOptions o) : o_(std::move(o)), rate_(parse_rate(o_.request_rate)) {
    if (o_.num_prompts < 1) throw std::invalid_argument("--num-prompts must be >= 1");
    if (!o_.plot.empty() && o_.sweep.empty()) throw std::invalid_argument("--plot needs --sweep");
    raise_open_file_limit();
    BackendOptions b{o_.host, o_.port, o_.model, o_.ignore_eos, o_.request_timeout_s};
    if (o_.backend == "grpc") {
      auto grpc = std::make_unique<GrpcBackend>(b);
      // Random ids must be ids the served model can embed.
      uint32_t vocab = grpc->model_info().vocab_size();
      if (vocab > 0) o_.token_id_max = std::min(o_.token_id_max, vocab);
      model_ = grpc->model_info().model_id();
      backend_ = std::move(grpc);
    } else {
      auto openai = std::make_unique<OpenAiBackend>(io_, b);
      model_ = openai->model();
      backend_ = std::move(openai);
    }
    std::mt19937_64 prompt_rng(o_.seed);
    specs_ = make_requests(o_, prompt_rng);
    std::mt19937_64 arrival_rng(o_.seed ^ 0x9e3779b97f4a7c15ull);  // arrivals independent of the prompts
    arrivals_ = poisson_arrivals(o_.num_prompts, rate_, arrival_rng);
  }

  void run() {
    warm_up();
    nlohmann::json result;
    result["config"] = config_json(o_, model_);
    if (o_.sweep.empty()) {
      auto [summary, records] = measure(o_.max_concurrency);
      std::fputs(summary_table(table_config(o_.max_concurrency), summary).c_str(), stdout);
      result["summary"] = summary_json(summary);
      result["requests"] = records_json(records);
    } else {
      result["sweep"] = run_sweep();
    }
    if (!o_.output_file.empty()) write_json(result, o_.output_file);
  }

 private:
  // Warm-up requests (the first prompts of the workload, all at once) are not measured; a failed
  // one stops the benchmark, since the server is then not ready to be measured.
  void warm_up() {
    if (o_.warmup_requests <= 0) return;
    std::vector<RequestSpec> warmup;
    for (int i = 0; i < o_.warmup_requests; ++i) warmup.push_back(specs_[size_t(i) % specs_.size()]);
    std::vector<double> at_once(warmup.size(), 0.0);
    std::fprintf(stderr, "warming up with %zu request(s)\n", warmup.size());
    auto run = run_requests(io_, *backend_, warmup, at_once, o_.max_concurrency, false);
    for (const auto& r : run.records)
      if (!r.success) throw std::runtime_error("warm-up request failed: " + r.error);
  }

  std::pair<Summary, std::vector<RequestRecord>> measure(int max_concurrency) {
    auto run = run_requests(io_, *backend_, specs_, arrivals_, max_concurrency, isatty(STDERR_FILENO) != 0);
    return {summarize(run.records, run.duration), std::move(run.records)};
  }

  nlohmann::json run_sweep() {
    std::vector<SweepPoint> points;
    auto runs = nlohmann::json::array();
    for (int c : o_.sweep) {
      std::fprintf(stderr, "sweep: max concurrency %d\n", c);
      auto [summary, records] = measure(c);
      std::fputs(summary_table(table_config(c), summary).c_str(), stdout);
      runs.push_back({{"max_concurrency", c}, {"summary", summary_json(summary)}, {"requests", records_json(records)}});
      points.push_back({c, summary});
    }
    std::fputs(sweep_table(points).c_str(), stdout);
    if (!o_.plot.empty()) {
      std::string title = (model_.empty() ? o_.backend : model_) + ": " + std::to_string(o_.random_input_len) + " in / " +
                          std::to_string(o_.random_output_len) + " out";
      plot_sweep(points, title, o_.plot);
      std::printf("plot written to %s\n", o_.plot.c_str());
    }
    return runs;
  }

  RunConfig table_config(int max_concurrency) const { return {o_.backend, model_, rate_, max_concurrency}; }

  static void write_json(const nlohmann::json& result, const std::string& path) {
    std::ofstream out(path);
    if (!out) throw std::runtime_error("cannot write --output-file " + path);
    out << result.dump(1) << '\n';
    if (!out) throw std::runtime_error("failed writing --output-file " + path);
    std::fprintf(stderr, "results written to %s\n", path.c_str());
  }

  BenchOptions o_;
  double rate_;
  boost::asio::io_context io_;
  std::unique_ptr<Backend> backend_;
  std::string model_;
  std::vector<RequestSpec> specs_;
  std::vector<double> arrivals_;
};

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand("bench", "Benchmark a serving endpoint: TTFT, TPOT, ITL, throughput (like SGLang's bench_serving)");
  cmd->add_option("--backend", o->backend, "deltaserve gRPC, or OpenAI-compatible /v1/completions (deltaserve, SGLang, vLLM)")
      ->check(CLI::IsMember({"grpc", "openai"}))
      ->capture_default_str();
  cmd->add_option("--host", o->host)->capture_default_str();
  cmd->add_option("--port", o->port, "the server's HTTP port (openai) or gRPC port (grpc)")->required();
  cmd->add_option("--model", o->model, "model name to request (default: the served model)");
  cmd->add_option("--dataset", o->dataset)->check(CLI::IsMember({"random", "jsonl", "shared-prefix"}))->capture_default_str();
  cmd->add_option("--dataset-path", o->dataset_path, "JSONL file of {\"prompt\": text or [ids], \"output_len\": n}");
  cmd->add_option("--num-prompts", o->num_prompts)->capture_default_str();
  cmd->add_option("--random-input-len", o->random_input_len, "input tokens (max of the random range)")->capture_default_str();
  cmd->add_option("--random-output-len", o->random_output_len, "output tokens (max of the random range)")->capture_default_str();
  cmd->add_option("--random-range-ratio", o->random_range_ratio, "lengths uniform in [L*R, L]")->capture_default_str();
  cmd->add_option("--prompt-format", o->prompt_format, "random prompts as token ids or as text")
      ->check(CLI::IsMember({"ids", "text"}))
      ->capture_default_str();
  cmd->add_option("--token-id-min", o->token_id_min, "random token ids are drawn from [min, max)")->capture_default_str();
  cmd->add_option("--token-id-max", o->token_id_max, "(grpc: capped at the model's vocabulary)")->capture_default_str();
  cmd->add_option("--shared-prefix-len", o->shared_prefix_len, "shared-prefix: tokens of the common prefix");
  cmd->add_option("--shared-prefix-groups", o->shared_prefix_groups, "shared-prefix: number of distinct prefixes")
      ->capture_default_str();
  cmd->add_option("--request-rate", o->request_rate, "Poisson arrivals, requests/s (inf: all at once)")->capture_default_str();
  cmd->add_option("--max-concurrency", o->max_concurrency, "most requests in flight (0: unlimited)")->capture_default_str();
  cmd->add_option("--seed", o->seed)->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "ask for exactly max_tokens tokens");
  cmd->add_option("--warmup-requests", o->warmup_requests, "unmeasured requests sent first")->capture_default_str();
  cmd->add_option("--request-timeout", o->request_timeout_s, "seconds before a request counts as failed (0: never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--output-file", o->output_file, "JSON file: config, summary and every request");
  cmd->add_option("--sweep", o->sweep, "run once per max concurrency, e.g. 1,4,16,64")->delimiter(',');
  cmd->add_option("--plot", o->plot, "with --sweep: PNG of output throughput against median TPOT (gnuplot)");
  cmd->callback([o] {
    try {
      Benchmark(*o).run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "deltaserve bench: error: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace ds::bench
