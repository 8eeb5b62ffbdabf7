#include "kernels/moe.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/gemm.h"

namespace ds::kernels {

void validate_moe_dims(const MoeDims& dims) {
  auto fail = [](const char* field, int64_t value) {
    throw std::invalid_argument(std::string("MoeDims.") + field + " = " + std::to_string(value) + " is invalid");
  };
  if (dims.hidden <= 0) fail("hidden", dims.hidden);
  if (dims.num_experts <= 0 || dims.num_experts > 1024) fail("num_experts", dims.num_experts);
  if (dims.top_k <= 0 || dims.top_k > dims.num_experts || dims.top_k > 32) fail("top_k", dims.top_k);
  if (dims.expert_intermediate <= 0) fail("expert_intermediate", dims.expert_intermediate);
  if (dims.shared_intermediate < 0) fail("shared_intermediate", dims.shared_intermediate);
}

namespace cpu {

void moe_route(const float* logits, int64_t T, int64_t num_experts, int64_t top_k, bool norm_topk_prob,
               int32_t* topk_ids, float* topk_weights) {
  std::vector<float> probs(static_cast<size_t>(num_experts));
  std::vector<uint8_t> taken(static_cast<size_t>(num_experts));
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * num_experts;
    const auto logit = [&](int64_t e) { return std::isnan(row[e]) ? -INFINITY : row[e]; };  // NaN: never preferred
    float max_logit = -INFINITY;
    for (int64_t e = 0; e < num_experts; ++e) max_logit = std::max(max_logit, logit(e));
    float sum = 0;
    for (int64_t e = 0; e < num_experts; ++e) sum += probs[size_t(e)] = std::exp(logit(e) - max_logit);
    std::fill(taken.begin(), taken.end(), 0);
    float picked_sum = 0;
    for (int64_t j = 0; j < top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (!taken[size_t(e)] && (best < 0 || probs[size_t(e)] > probs[size_t(best)])) best = e;
      }
      taken[size_t(best)] = 1;
      topk_ids[t * top_k + j] = int32_t(best);
      topk_weights[t * top_k + j] = probs[size_t(best)] / sum;
      picked_sum += probs[size_t(best)] / sum;
    }
    if (norm_topk_prob) {
      for (int64_t j = 0; j < top_k; ++j) topk_weights[t * top_k + j] /= picked_sum;
    }
  }
}

namespace {

// down(silu(gate(x)) · up(x)) for T rows: gate_up [2I, H], down [H, I] -> out [T, H].
void mlp(const float* x, int64_t T, int64_t H, int64_t I, const float* gate_up, const float* down, float* out) {
  std::vector<float> hidden(size_t(T) * size_t(2 * I)), act(size_t(T) * size_t(I));
  gemm(x, H, gate_up, hidden.data(), 2 * I, T, 2 * I, H);
  silu_and_mul(hidden.data(), 2 * I, act.data(), I, T, I);
  gemm(act.data(), I, down, out, H, T, H, I);
}

}  // namespace

void moe_forward(const float* x, int64_t T, const MoeDims& dims, const MoeWeights<float>& weights, float* out) {
  validate_moe_dims(dims);
  const int64_t H = dims.hidden, E = dims.num_experts, k = dims.top_k, I = dims.expert_intermediate;
  std::vector<float> logits(size_t(T) * size_t(E));
  gemm(x, H, weights.router, logits.data(), E, T, E, H);
  std::vector<int32_t> ids(size_t(T) * size_t(k));
  std::vector<float> topk_weights(size_t(T) * size_t(k));
  moe_route(logits.data(), T, E, k, dims.norm_topk_prob, ids.data(), topk_weights.data());

  std::fill(out, out + T * H, 0.f);
  std::vector<float> expert_out(static_cast<size_t>(H));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ids[size_t(t * k + j)];
      mlp(x + t * H, 1, H, I, weights.experts_gate_up + e * 2 * I * H, weights.experts_down + e * H * I,
          expert_out.data());
      for (int64_t i = 0; i < H; ++i) out[t * H + i] += topk_weights[size_t(t * k + j)] * expert_out[size_t(i)];
    }
  }
  if (dims.shared_intermediate == 0) return;
  std::vector<float> shared(size_t(T) * size_t(H)), shared_logit(static_cast<size_t>(T));
  mlp(x, T, H, dims.shared_intermediate, weights.shared_gate_up, weights.shared_down, shared.data());
  gemm(x, H, weights.shared_gate, shared_logit.data(), 1, T, 1, H);
  for (int64_t t = 0; t < T; ++t) {
    const float g = 1.f / (1.f + std::exp(-shared_logit[size_t(t)]));
    for (int64_t i = 0; i < H; ++i) out[t * H + i] += g * shared[size_t(t * H + i)];
  }
}

}  // namespace cpu

}  // namespace ds::kernels
