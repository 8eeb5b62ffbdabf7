// Sampling, one 1024-thread block per row (see sampling.h for the semantics). Passes over the row:
//   1. raw max / argmax / sum of exp (online), for greedy and the raw logprob;
//   2. top-k: three radix passes (12, 10, 10 bits) of counts over the order-preserving uint32 image of z;
//   3. top-p: the probability mass of the kept candidates, then three radix passes of mass;
//   4. argmax of z + Gumbel(seed, step, i) over the kept set, skipping tokens too far below the
//      maximum to win whatever their noise.
// Logits are re-read each pass (L2 / HBM); nothing of the row is staged.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_utils.cuh"
#include "kernels/sampling.h"

namespace ds::kernels::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kMaxBins = 4096;

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t bits = __float_as_uint(f);
  return bits ^ ((bits & 0x80000000u) ? 0xffffffffu : 0x80000000u);
}
__device__ __forceinline__ float from_order_key(uint32_t key) {
  return __uint_as_float(key ^ ((key & 0x80000000u) ? 0x80000000u : 0xffffffffu));
}

// (value, index) with the larger value winning, the lower index on ties.
struct ArgMax {
  float value;
  int32_t index;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

// Online log-sum-exp state: sum of exp(x - max).
struct Lse {
  float max;
  float sum;
};
__device__ __forceinline__ Lse merge(Lse a, Lse b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch /* [32] */) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    T other;
    static_assert(sizeof(T) % 4 == 0, "shuffled as 32-bit words");
    const uint32_t* src = reinterpret_cast<const uint32_t*>(&v);
    uint32_t* dst = reinterpret_cast<uint32_t*>(&other);
#pragma unroll
    for (int w = 0; w < int(sizeof(T) / 4); ++w) dst[w] = __shfl_xor_sync(0xffffffffu, src[w], offset);
    v = op(v, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = scratch[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) total = op(total, scratch[w]);
  return total;
}

// Histogram weights are integers, so every sum is exact and order-independent (deterministic
// thresholds, native shared-memory integer atomics): counts for top-k, and for top-p the mass
// exp(z - z_max) in fixed point with 40 fractional bits (a sum over any vocab fits in 64 bits).
using Weight = unsigned long long;
constexpr double kMassOne = 1099511627776.0;  // 2^40

__device__ __forceinline__ Weight mass_weight(float z, float z_max) { return Weight(double(__expf(z - z_max)) * kMassOne); }

struct Shared {
  ArgMax argmax_scratch[32];
  Lse lse_scratch[32];
  Weight sum_scratch[32];
  Weight warp_suffix[32];
  Weight hist[kMaxBins];
  uint32_t prefix, prefix_mask;
  Weight remaining;  // weight still to be covered below the current prefix
  int chosen;
  Weight chosen_above;
};

// Radix digits from the top: 12 bits (sign, exponent, 3 mantissa bits, so typical logits spread
// over many bins), then 10 and 10.
__device__ __forceinline__ int digit_shift(int pass) { return pass == 0 ? 20 : (pass == 1 ? 10 : 0); }
__device__ __forceinline__ int digit_bits(int pass) { return pass == 0 ? 12 : 10; }

// Finds, scanning bins from the highest, the bin where the cumulative weight first reaches
// sh.remaining (it exists: the remaining weight is at most the histogram's total); sets sh.chosen
// and sh.chosen_above (the weight of the bins above it). Thread t owns bins [t·per, (t+1)·per);
// the suffix sums over threads come from a warp scan plus the per-warp totals.
__device__ void find_bin(int bins, Shared& sh) {
  const int per = bins / int(blockDim.x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = int(threadIdx.x) * per;
  Weight local = 0;
  for (int b = 0; b < per; ++b) local += sh.hist[first + b];
  Weight suffix = local;  // inclusive suffix sum over the lanes at or above this one
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const Weight other = __shfl_down_sync(0xffffffffu, suffix, offset);
    if (lane + offset < 32) suffix += other;
  }
  if (lane == 0) sh.warp_suffix[warp] = suffix;
  __syncthreads();
  Weight above = suffix - local;
  for (int w = warp + 1; w < int(blockDim.x >> 5); ++w) above += sh.warp_suffix[w];
  const Weight target = sh.remaining;
  for (int b = first + per - 1; b >= first; --b) {
    const Weight weight = sh.hist[b];
    if (above < target && above + weight >= target) {
      sh.chosen = b;
      sh.chosen_above = above;
    }
    above += weight;
  }
  __syncthreads();
}

// Radix selection from the top: the key K with weight(keys > K) < target <= weight(keys >= K)
// among elements with include(z); weight 1 (counts) or mass_weight(z).
template <bool kMass, typename Include>
__device__ float radix_select(const float* x, int64_t vocab, float temperature, float z_max, Weight target,
                              Include include, Shared& sh) {
  if (threadIdx.x == 0) {
    sh.prefix = 0;
    sh.prefix_mask = 0;
    sh.remaining = target;
  }
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = digit_shift(pass), bins = 1 << digit_bits(pass);
    for (int b = threadIdx.x; b < bins; b += blockDim.x) sh.hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = sh.prefix, mask = sh.prefix_mask;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float z = x[i] / temperature;
      if (!include(z)) continue;
      const uint32_t key = order_key(z);
      if ((key & mask) != prefix) continue;
      atomicAdd(&sh.hist[(key >> shift) & uint32_t(bins - 1)], kMass ? mass_weight(z, z_max) : Weight(1));
    }
    __syncthreads();
    find_bin(bins, sh);
    if (threadIdx.x == 0) {
      sh.remaining -= sh.chosen_above;
      sh.prefix |= uint32_t(sh.chosen) << shift;
      sh.prefix_mask |= uint32_t(bins - 1) << shift;
    }
    __syncthreads();
  }
  return from_order_key(sh.prefix);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* logits, int64_t ld, int64_t vocab,
                                                          const SamplingParams* params, int32_t* tokens,
                                                          float* logprobs) {
  __shared__ Shared sh;
  const int64_t row = blockIdx.x;
  const float* x = logits + row * ld;
  const SamplingParams p = params[row];

  ArgMax best{-INFINITY, INT32_MAX};
  Lse lse{-INFINITY, 0.f};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = x[i];
    best = better(best, ArgMax{v, int32_t(i)});
    lse = merge(lse, Lse{v, 1.f});
  }
  best = block_reduce(best, better, sh.argmax_scratch);
  lse = block_reduce(lse, merge, sh.lse_scratch);

  int32_t token = best.index;
  if (!(p.temperature <= 0.f || p.top_k == 1)) {
    const float temperature = p.temperature;
    const float z_max = best.value / temperature;
    float threshold = -INFINITY;
    const float min_p = fminf(fmaxf(p.min_p, 0.f), 1.f);
    if (min_p > 0.f) threshold = fmaxf(threshold, z_max + logf(min_p));
    if (p.top_k > 0 && int64_t(p.top_k) < vocab) {
      const float kth = radix_select<false>(x, vocab, temperature, z_max, Weight(p.top_k),
                                            [](float) { return true; }, sh);
      threshold = fmaxf(threshold, kth);
    }
    if (p.top_p < 1.f) {
      Weight mass = 0;
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float z = x[i] / temperature;
        if (z >= threshold) mass += mass_weight(z, z_max);
      }
      mass = block_reduce(mass, [](Weight a, Weight b) { return a + b; }, sh.sum_scratch);
      // At least the max-z token's weight (2^40), at most the kept mass.
      const Weight target = Weight(fmin(fmax(ceil(double(p.top_p) * double(mass)), kMassOne), double(mass)));
      const float th = threshold;
      const float c = radix_select<true>(x, vocab, temperature, z_max, target,
                                         [th](float z) { return z >= th; }, sh);
      threshold = fmaxf(threshold, c);
    }
    // The max-z token is always kept and its key is >= z_max + g_min; a token with z + g_max below
    // that cannot win. For u in [2^-25, 1 - 2^-25], g_max - g_min = 17.33 + 2.85 (margin added).
    const float hopeless = z_max - 20.5f;
    ArgMax pick{-INFINITY, INT32_MAX};
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float z = x[i] / temperature;
      if (z < threshold || z < hopeless) continue;
      const float gumbel = -logf(-logf(sampling_uniform(p.seed, p.step, uint64_t(i))));
      pick = better(pick, ArgMax{z + gumbel, int32_t(i)});
    }
    token = block_reduce(pick, better, sh.argmax_scratch).index;
  }
  if (threadIdx.x == 0) {
    tokens[row] = token;
    if (logprobs) logprobs[row] = x[token] - lse.max - logf(lse.sum);
  }
}

}  // namespace

void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab, const SamplingParams* params,
            int32_t* tokens, float* logprobs, cudaStream_t stream) {
  if (vocab <= 0 || ld < vocab || vocab > INT32_MAX || rows < 0) {
    throw std::invalid_argument("cuda::sample: bad vocab " + std::to_string(vocab) + " / ld " + std::to_string(ld));
  }
  if (rows == 0) return;
  sample_kernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, ld, vocab, params, tokens, logprobs);
  cuda_utils::check_launch("cuda::sample");
}

}  // namespace ds::kernels::cuda
