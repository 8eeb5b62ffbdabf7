// The requests of a benchmark and when they arrive. Everything is drawn from seeded generators,
// so the same flags give the same prompts, lengths and arrival times.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <variant>
#include <vector>

namespace ds::bench {

using Prompt = std::variant<std::string, std::vector<uint32_t>>;  // text or token ids

struct RequestSpec {
  int index = 0;
  Prompt prompt;
  int prompt_len = 0;  // tokens: exact for ids, an estimate (one per word) for text
  int output_len = 0;  // max_tokens
};

enum class PromptFormat { kTokenIds, kText };

struct RandomOptions {
  int num_prompts = 0;
  int input_len = 0;
  int output_len = 0;
  double range_ratio = 1.0;  // lengths uniform in [max(1, floor(L·R)), L]
  PromptFormat format = PromptFormat::kTokenIds;
  uint32_t token_id_min = 0;  // token ids uniform in [min, max): a range every model can embed
  uint32_t token_id_max = 0;
  int shared_prefix_len = 0;     // > 0: every prompt starts with one of the group prefixes
  int shared_prefix_groups = 1;  // number of distinct prefixes (request i uses prefix i % groups)
};

// Random prompts (and, with shared_prefix_len, the shared-prefix workload).
std::vector<RequestSpec> random_requests(const RandomOptions& options, std::mt19937_64& rng);

// Requests from a JSONL file, one {"prompt": "text" | [ids], "output_len": n} object a line
// ("output_len" optional: default_output_len). Lines are used in order and reused from the
// start when the file has fewer than num_prompts. Throws naming the file and line on bad input.
std::vector<RequestSpec> jsonl_requests(const std::string& path, int num_prompts, int default_output_len);

// Arrival offsets (seconds from the start) of n requests: a Poisson process at `rate` requests/s
// (exponential gaps, the first at 0), or all at 0 when rate is infinite.
std::vector<double> poisson_arrivals(int n, double rate, std::mt19937_64& rng);

}  // namespace ds::bench
