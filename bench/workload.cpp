#include "bench/workload.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace ds::bench {
namespace {

// Common English words that byte-level BPE vocabularies hold as one token with a leading space,
// so a random text prompt of n words is close to n tokens.
constexpr std::array<const char*, 48> kWords = {
    "the",   "of",    "and",   "to",    "in",    "is",    "that",  "for",   "it",    "as",    "was",  "with",
    "be",    "by",    "on",    "not",   "he",    "this",  "are",   "or",    "his",   "from",  "at",   "which",
    "but",   "have",  "an",    "had",   "they",  "you",   "were",  "their", "one",   "all",   "we",   "can",
    "her",   "has",   "there", "been",  "if",    "more",  "when",  "will",  "would", "who",   "so",   "no"};

int draw_length(int max_len, double range_ratio, std::mt19937_64& rng) {
  int min_len = std::max(1, int(std::floor(max_len * range_ratio)));
  return std::uniform_int_distribution<int>(min_len, max_len)(rng);
}

std::vector<uint32_t> random_ids(int n, const RandomOptions& o, std::mt19937_64& rng) {
  std::uniform_int_distribution<uint32_t> id(o.token_id_min, o.token_id_max - 1);
  std::vector<uint32_t> ids(n);
  for (auto& v : ids) v = id(rng);
  return ids;
}

std::string random_text(int n, std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> word(0, kWords.size() - 1);
  std::string text;
  for (int i = 0; i < n; ++i) {
    if (i) text.push_back(' ');
    text += kWords[word(rng)];
  }
  return text;
}

Prompt random_prompt(int n, const RandomOptions& o, std::mt19937_64& rng) {
  if (o.format == PromptFormat::kText) return random_text(n, rng);
  return random_ids(n, o, rng);
}

Prompt concat(const Prompt& prefix, Prompt suffix) {
  if (auto* text = std::get_if<std::string>(&prefix)) {
    const auto& tail = std::get<std::string>(suffix);
    return tail.empty() ? *text : *text + " " + tail;
  }
  auto ids = std::get<std::vector<uint32_t>>(prefix);
  const auto& tail = std::get<std::vector<uint32_t>>(suffix);
  ids.insert(ids.end(), tail.begin(), tail.end());
  return ids;
}

void check_random_options(const RandomOptions& o) {
  if (o.num_prompts < 0) throw std::invalid_argument("--num-prompts must be >= 0");
  if (o.input_len < 1) throw std::invalid_argument("--random-input-len must be >= 1");
  if (o.output_len < 1) throw std::invalid_argument("--random-output-len must be >= 1");
  if (!(o.range_ratio >= 0 && o.range_ratio <= 1)) throw std::invalid_argument("--random-range-ratio must be in [0, 1]");
  if (o.format == PromptFormat::kTokenIds && o.token_id_min >= o.token_id_max)
    throw std::invalid_argument("token id range [" + std::to_string(o.token_id_min) + ", " +
                                std::to_string(o.token_id_max) + ") is empty");
  if (o.shared_prefix_len < 0) throw std::invalid_argument("--shared-prefix-len must be >= 0");
  if (o.shared_prefix_groups < 1) throw std::invalid_argument("--shared-prefix-groups must be >= 1");
}

int estimated_tokens(const std::string& text) {
  std::istringstream words(text);
  int n = 0;
  for (std::string w; words >> w;) ++n;
  return n;
}

}  // namespace

std::vector<RequestSpec> random_requests(const RandomOptions& o, std::mt19937_64& rng) {
  check_random_options(o);
  std::vector<Prompt> prefixes;
  for (int g = 0; o.shared_prefix_len > 0 && g < o.shared_prefix_groups; ++g)
    prefixes.push_back(random_prompt(o.shared_prefix_len, o, rng));
  std::vector<RequestSpec> specs(o.num_prompts);
  for (int i = 0; i < o.num_prompts; ++i) {
    auto& s = specs[i];
    s.index = i;
    int suffix_len = draw_length(o.input_len, o.range_ratio, rng);
    s.output_len = draw_length(o.output_len, o.range_ratio, rng);
    Prompt suffix = random_prompt(suffix_len, o, rng);
    s.prompt = prefixes.empty() ? std::move(suffix) : concat(prefixes[i % prefixes.size()], std::move(suffix));
    s.prompt_len = suffix_len + (prefixes.empty() ? 0 : o.shared_prefix_len);
  }
  return specs;
}

std::vector<RequestSpec> jsonl_requests(const std::string& path, int num_prompts, int default_output_len) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open dataset file " + path);
  std::vector<RequestSpec> lines;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto where = [&] { return path + ":" + std::to_string(line_no) + ": "; };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::runtime_error(where() + "not JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("prompt")) throw std::runtime_error(where() + "missing \"prompt\"");
    RequestSpec s;
    const auto& p = j["prompt"];
    if (p.is_string()) {
      s.prompt = p.get<std::string>();
      s.prompt_len = estimated_tokens(p.get<std::string>());
    } else if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const auto& v) { return v.is_number_unsigned(); })) {
      s.prompt = p.get<std::vector<uint32_t>>();
      s.prompt_len = int(p.size());
    } else {
      throw std::runtime_error(where() + "\"prompt\" must be a string or a non-empty array of token ids");
    }
    s.output_len = default_output_len;
    if (j.contains("output_len")) {
      if (!j["output_len"].is_number_integer() || j["output_len"].get<long long>() < 1)
        throw std::runtime_error(where() + "\"output_len\" must be a positive integer");
      s.output_len = j["output_len"].get<int>();
    }
    lines.push_back(std::move(s));
  }
  if (lines.empty()) throw std::runtime_error("dataset file " + path + " holds no prompt");
  std::vector<RequestSpec> specs;
  for (int i = 0; i < num_prompts; ++i) {
    specs.push_back(lines[i % lines.size()]);
    specs.back().index = i;
  }
  return specs;
}

std::vector<double> poisson_arrivals(int n, double rate, std::mt19937_64& rng) {
  if (!(rate > 0)) throw std::invalid_argument("--request-rate must be positive (inf: all at once)");
  std::vector<double> t(n, 0.0);
  if (std::isinf(rate)) return t;
  std::exponential_distribution<double> gap(rate);
  for (int i = 1; i < n; ++i) t[i] = t[i - 1] + gap(rng);
  return t;
}

}  // namespace ds::bench
