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

// The uniform variate of (seed, step, token index): exactly the same bits on CPU and CUDA.
float sampling_uniform(uint64_t seed, uint64_t step, uint64_t index);

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
// top-k and top-p thresholds by radix selection over the order-preserving uint32 image of z (four
// 8-bit passes, counts for top-k, probability mass for top-p) — no sort. Any vocab up to 2^31 (tested
// to 248,320). Asynchronous, graph-capturable.
void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const SamplingParams* params,
            int32_t* tokens, float* logprobs, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
