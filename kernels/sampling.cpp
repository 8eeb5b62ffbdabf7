#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ds::kernels::cpu {

namespace {

void validate(const SamplingParams& p, int64_t row) {
  if (!std::isfinite(p.temperature) || !(p.top_p > 0.f && p.top_p <= 1.f) || !(p.min_p >= 0.f && p.min_p <= 1.f)) {
    throw std::invalid_argument("sample: row " + std::to_string(row) + " has temperature " +
                                std::to_string(p.temperature) + ", top_p " + std::to_string(p.top_p) + ", min_p " +
                                std::to_string(p.min_p) + " (need finite temperature, 0 < top_p <= 1, 0 <= min_p <= 1)");
  }
}

bool is_greedy(const SamplingParams& p) { return p.temperature <= 0.f || p.top_k == 1; }

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

// The threshold of step 2 of sampling.h over z = x / temperature.
float keep_threshold(const std::vector<float>& z, const SamplingParams& p) {
  const int64_t V = int64_t(z.size());
  const float z_max = *std::max_element(z.begin(), z.end());
  float threshold = -INFINITY;
  if (p.min_p > 0.f) threshold = std::max(threshold, z_max + std::log(p.min_p));
  if (p.top_k > 0 && p.top_k < V) {
    std::vector<float> sorted(z);
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<float>());
    threshold = std::max(threshold, sorted[size_t(p.top_k - 1)]);
  }
  if (p.top_p < 1.f) {
    std::vector<float> kept;
    for (float v : z) {
      if (v >= threshold) kept.push_back(v);
    }
    std::sort(kept.begin(), kept.end(), std::greater<float>());
    double total = 0;
    for (float v : kept) total += std::exp(double(v) - z_max);
    double cumulative = 0;
    for (float v : kept) {
      cumulative += std::exp(double(v) - z_max);
      if (cumulative >= double(p.top_p) * total) {
        threshold = std::max(threshold, v);
        break;
      }
    }
  }
  return threshold;
}

std::vector<float> scaled(const float* x, int64_t V, float temperature) {
  std::vector<float> z(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) z[size_t(i)] = x[i] / temperature;
  return z;
}

float raw_logprob(const float* x, int64_t V, int64_t token) {
  const float x_max = x[argmax(x, V)];
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(x[i]) - x_max);
  return float(double(x[token]) - x_max - std::log(sum));
}

}  // namespace

void kept_mask(const float* logits, int64_t vocab, const SamplingParams& params, uint8_t* mask) {
  validate(params, 0);
  std::fill(mask, mask + vocab, 0);
  if (is_greedy(params)) {
    mask[argmax(logits, vocab)] = 1;
    return;
  }
  const std::vector<float> z = scaled(logits, vocab, params.temperature);
  const float threshold = keep_threshold(z, params);
  for (int64_t i = 0; i < vocab; ++i) mask[i] = z[size_t(i)] >= threshold;
}

void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const SamplingParams* params,
            int32_t* tokens, float* logprobs) {
  if (vocab <= 0 || ld < vocab) {
    throw std::invalid_argument("sample: bad vocab " + std::to_string(vocab) + " / ld " + std::to_string(ld));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const SamplingParams& p = params[r];
    validate(p, r);
    const float* x = logits + r * ld;
    int64_t token;
    if (is_greedy(p)) {
      token = argmax(x, vocab);
    } else {
      const std::vector<float> z = scaled(x, vocab, p.temperature);
      const float threshold = keep_threshold(z, p);
      token = -1;
      float best = -INFINITY;
      for (int64_t i = 0; i < vocab; ++i) {
        if (z[size_t(i)] < threshold) continue;
        const float gumbel = -std::log(-std::log(sampling_uniform(p.seed, p.step, uint64_t(i))));
        const float key = z[size_t(i)] + gumbel;
        if (token < 0 || key > best) {
          best = key;
          token = i;
        }
      }
    }
    tokens[r] = int32_t(token);
    if (logprobs) logprobs[r] = raw_logprob(x, vocab, token);
  }
}

}  // namespace ds::kernels::cpu
