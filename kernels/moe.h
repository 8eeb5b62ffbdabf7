// Sparse MoE block of Qwen3.5-MoE / Qwen3-Next (per tensor-parallel rank: experts' intermediate
// dimension Ie and the shared expert's Is are the rank's shards; the router is replicated):
//
//   logits = x · W_routerᵀ                       fp32 [T, E]
//   probs  = softmax(logits) (fp32);  top-k experts per token (ties: lower expert id first)
//   w      = top-k probs, renormalised to sum 1 when norm_topk_prob
//   routed[t] = Σ_j w[t][j] · down_e( silu(gate_e(x[t])) · up_e(x[t]) ),  e = expert j of token t
//   shared[t] = sigmoid(x[t] · w_shared_gate) · down_s( silu(gate_s(x[t])) · up_s(x[t]) )
//   out[t] = routed[t] + shared[t]          (a partial sum on each rank: the caller all-reduces)
//
// Weight layouts (weights/rank_weights.h): router [E, H]; experts_gate_up [E, 2Ie, H] (per expert
// rows [gate; up]); experts_down [E, H, Ie]; shared_gate_up [2Is, H]; shared_down [H, Is];
// shared_gate [1, H]. The shared expert is optional (shared_intermediate = 0).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

struct MoeDims {
  int64_t hidden = 0;               // H
  int64_t num_experts = 0;          // E
  int64_t top_k = 0;                // k
  int64_t expert_intermediate = 0;  // Ie (per rank)
  int64_t shared_intermediate = 0;  // Is (per rank), 0 = no shared expert
  bool norm_topk_prob = true;
};

void validate_moe_dims(const MoeDims& dims);  // throws std::invalid_argument naming the field

template <typename T>
struct MoeWeights {
  const T* router = nullptr;           // [E, H]
  const T* experts_gate_up = nullptr;  // [E, 2Ie, H]
  const T* experts_down = nullptr;     // [E, H, Ie]
  const T* shared_gate_up = nullptr;   // [2Is, H]
  const T* shared_down = nullptr;      // [H, Is]
  const T* shared_gate = nullptr;      // [1, H]
};

// Block-FP8 experts (layouts of gemm.h per expert; scales [E, ceil(rows/128), ceil(cols/128)]).
// The router and shared_expert_gate stay BF16.
struct MoeFp8Weights {
  const bf16* router = nullptr;                  // [E, H]
  const uint8_t* experts_gate_up = nullptr;      // [E, 2Ie, H]
  const float* experts_gate_up_scale = nullptr;  // [E, ceil(2Ie/128), ceil(H/128)]
  const uint8_t* experts_down = nullptr;         // [E, H, Ie]
  const float* experts_down_scale = nullptr;     // [E, ceil(H/128), ceil(Ie/128)]
  const uint8_t* shared_gate_up = nullptr;       // [2Is, H]
  const float* shared_gate_up_scale = nullptr;   // [ceil(2Is/128), ceil(H/128)]
  const uint8_t* shared_down = nullptr;          // [H, Is]
  const float* shared_down_scale = nullptr;      // [ceil(H/128), ceil(Is/128)]
  const bf16* shared_gate = nullptr;             // [1, H]
};

namespace cpu {

// Router: logits [T, E] fp32 -> topk_ids int32 [T, k], topk_weights fp32 [T, k] (descending prob;
// ties go to the lower expert id). A NaN logit counts as -inf, so the k ids are always distinct (a
// row of NaNs gets experts 0..k-1 with NaN weights).
void moe_route(const float* logits, int64_t T, int64_t num_experts, int64_t top_k, bool norm_topk_prob,
               int32_t* topk_ids, float* topk_weights);

// The whole block in fp32: x [T, H] dense -> out [T, H] dense.
void moe_forward(const float* x, int64_t T, const MoeDims& dims, const MoeWeights<float>& weights, float* out);

}  // namespace cpu

namespace cuda {

class GemmRunner;

// Router on device: same contract as cpu::moe_route (one warp per token, E <= 1024).
void moe_route(const float* logits, int64_t T, int64_t num_experts, int64_t top_k, bool norm_topk_prob,
               int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

// Owns the scratch of the MoE block for up to max_tokens tokens (allocated in the constructor).
// forward(): router GEMM (fp32 logits) -> one routing kernel (top-k; the shared expert's gate as a
// warp dot product; its last block sorts the (token, slot) pairs by expert, with per-expert row and
// tile offsets) -> ONE grouped GEMM launch for all experts' gate_up -> silu_and_mul -> one grouped
// launch for down -> one combine kernel (routing weights, sigmoid shared gate). Where the shared
// expert's intermediate size is the experts' (the published models) and T <= 64, it runs as expert E
// of the grouped launches (one more pair per token, weighted by its gate, not renormalised);
// otherwise its GEMMs and SiLU-mul run on their own before the combine. For T <= 64 (BF16) or 32
// (FP8) the grouped GEMMs are the weight-streaming kernel, which reads gate_up's x rows through the
// sort's token index; larger batches gather x first for the tile kernel. No host synchronisation:
// the launch geometry depends only on T, so it is asynchronous and CUDA-graph capturable.
class MoeRunner {
 public:
  MoeRunner(const MoeDims& dims, int64_t max_tokens);
  ~MoeRunner();
  MoeRunner(const MoeRunner&) = delete;
  MoeRunner& operator=(const MoeRunner&) = delete;

  // x BF16 [T, H] dense (T <= max_tokens) -> out BF16 [T, H] dense. BF16 weights.
  void forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeWeights<bf16>& weights, bf16* out,
               cudaStream_t stream);
  // Block-FP8 experts and shared expert (BF16 activations, fp32 accumulation, exact weight scales).
  // x_fp8 (optional, T <= kFp8RowsMaxTokens): x already quantized (Fp8Rows), which the shared
  // expert's W8A8 gate_up reads instead of quantizing x where it runs on its own. Independently of
  // it, for such T (and W8A8 numerics) its SiLU-mul writes its output quantized for the down GEMM.
  // As one more expert it runs W8A16 like the routed experts.
  void forward(GemmRunner& gemm, const bf16* x, int64_t T, const MoeFp8Weights& weights, bf16* out, cudaStream_t stream,
               const Fp8Rows* x_fp8 = nullptr);

  const MoeDims& dims() const { return dims_; }

 private:
  MoeDims dims_;
  int64_t max_tokens_ = 0;
  void* scratch_ = nullptr;  // one device allocation, carved by forward()
  size_t scratch_bytes_ = 0;
};

}  // namespace cuda

}  // namespace ds::kernels
