// Sampling 256 rows × 248,320 fp32 logits (Qwen3.5's vocabulary): greedy, plain temperature,
// and top-k + top-p + min-p rows. GB/s counts the logits read once.
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/sampling.h"
#include "tests/gpu/kernels_bench_util.h"

using namespace ds::kernels;

int main() {
  const int64_t rows = 256, vocab = 248320;
  std::vector<float> host(size_t(rows * vocab));
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 4.f);
  for (auto& v : host) v = dist(rng);
  float* logits = bench::device_alloc<float>(host.size());
  bench::check(cudaMemcpy(logits, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "logits");
  int32_t* tokens = bench::device_alloc<int32_t>(static_cast<size_t>(rows));
  float* logprobs = bench::device_alloc<float>(static_cast<size_t>(rows));
  SamplingParams* params = bench::device_alloc<SamplingParams>(static_cast<size_t>(rows));

  struct Case {
    const char* name;
    SamplingParams p;
  };
  SamplingParams greedy;
  greedy.temperature = 0.f;
  SamplingParams plain;
  SamplingParams filtered;
  filtered.temperature = 0.7f;
  filtered.top_k = 50;
  filtered.top_p = 0.9f;
  filtered.min_p = 0.02f;
  SamplingParams top_p_only;
  top_p_only.top_p = 0.95f;
  std::printf("%-24s | %9s %9s %6s\n", "rows x 248320", "us", "GB/s", "%copy");
  for (const Case& c : {Case{"greedy", greedy}, Case{"temperature 1", plain}, Case{"top-p 0.95", top_p_only},
                        Case{"top-k 50 top-p 0.9 min-p", filtered}}) {
    std::vector<SamplingParams> ps(size_t(rows), c.p);
    for (int64_t r = 0; r < rows; ++r) ps[size_t(r)].seed = uint64_t(r);
    bench::check(cudaMemcpy(params, ps.data(), ps.size() * sizeof(SamplingParams), cudaMemcpyHostToDevice), "params");
    const double us = bench::median_us(
        [&](int i) {
          (void)i;
          cuda::sample(logits, vocab, rows, vocab, params, tokens, logprobs, nullptr);
        },
        3, 20);
    const double bytes = double(rows * vocab) * 4;
    std::printf("%-24s | %9.1f %9.0f %5.1f%%\n", c.name, us, bytes / us * 1e-3,
                bytes / us * 1e-3 / bench::copy_gbs() * 100);
  }
  return 0;
}
