// Token sampling, one row of logits per request.
//
// Per row, with raw fp32 logits x[0..V):
//   1. temperature <= 0 (or top_k == 1): greedy, token = argmax x (lowest id among equal maxima).
//   2. otherwise z = x / temperature, p = softmax(z), and the kept set is {i : z_i >= threshold}
//      where threshold is the largest of
//        min-p:  z_max + log(min_p)                 (p_i >= min_p · p_max; when min_p > 0)
//        top-k:  the k-th largest z                 (when 0 < top_k < V; ties at the k-th value are kept)
//        top-p:  the largest value c such that the probability mass of kept tokens with z >= c,
//                renormalised over the tokens surviving min-p and top-k, is >= top_p (when top_p < 1)
//      (the order of vLLM: temperature, min-p, top-k, top-p).
//   3. token = argmax over kept i of (z_i + g_i), g_i = −log(−log(u_i)) Gumbel noise, which samples
//      exactly from the renormalised kept distribution. u_i ∈ (0,1) is a counter-based hash of
//      (seed, step, i) (splitmix64 mixing; see sampling_uniform), identical on CPU and CUDA, so a
//      request's tokens are reproducible from its seed, and the same on both backends up to float
//      rounding of the thresholds.
//   4. logprob = log_softmax(x)[token] of the RAW logits (temperature 1, before any filtering), the
//      model's own log-probability of the chosen token (what OpenAI-style `logprobs` report).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

struct SamplingParams {
  float temperature = 1.f;  // <= 0: greedy
  int32_t top_k = 0;        // <= 0 or >= V: off
  float top_p = 1.f;        // in (0, 1]; 1: off
  float min_p = 0.f;        // in [0, 1]; 0: off
  uint64_t seed = 0;        // per request
  uint64_t step = 0;        // per request: index of the token being generated (0, 1, 2, ...)
};

#if defined(__CUDACC__)
#define DS_SAMPLING_HD __host__ __device__
#else
#define DS_SAMPLING_HD
#endif

// splitmix64's finaliser: a bijective 64-bit mix.
DS_SAMPLING_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The uniform variate of (seed, step, token index) in (0, 1): 24 random bits plus one half, so it is
// exact in fp32 and never 0 or 1. The same bits on CPU and CUDA.
DS_SAMPLING_HD inline float sampling_uniform(uint64_t seed, uint64_t step, uint64_t index) {
  const uint64_t h = splitmix64(seed ^ splitmix64(step ^ splitmix64(index)));
  return (float(h >> 40) + 0.5f) * (1.f / 16777216.f);
}

namespace cpu {

// logits fp32 [rows, vocab] row stride ld; params [rows]; outputs tokens int32 [rows] and
// logprobs fp32 [rows] (logprobs may be nullptr). Throws std::invalid_argument on bad params.
void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const SamplingParams* params,
            int32_t* tokens, float* logprobs);

// The kept set of step 2 as a 0/1 mask [vocab] for one row (tests; greedy rows keep the argmax only).
void kept_mask(const float* logits, int64_t vocab, const SamplingParams& params, uint8_t* mask);

}  // namespace cpu

namespace cuda {

// Same contract; logits, params, tokens, logprobs in device memory. One 1024-thread block per row;
// top-k and top-p thresholds by radix selection over the order-preserving uint32 image of z
// (three passes of 12, 10 and 10 bits: counts for top-k, probability mass for top-p), no sort.
// Any vocab up to 2^31 (tested to 248,320). Asynchronous, graph-capturable. The params live on the device and are not validated:
// top_p <= 0 acts as the smallest positive top_p, min_p is clamped to [0, 1].
void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const SamplingParams* params,
            int32_t* tokens, float* logprobs, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
