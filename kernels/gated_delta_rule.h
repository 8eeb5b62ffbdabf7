// The gated delta rule: GDN's linear-attention recurrence over a per-slot fp32 state.
//
// For value head h (key head kh = h / r, r = Hv/Hk), token t, with state S = S_h [dv][dk]:
//   q̂ = q[t][kh] / sqrt(|q|² + 1e-6) · dk^-0.5,   k̂ = k[t][kh] / sqrt(|k|² + 1e-6)
//   S ← exp(g[t][h]) · S                                   (decay)
//   u = beta[t][h] · (v[t][h] − S k̂)                       (u[i] = β(v[i] − Σ_j S[i][j] k̂[j]))
//   S ← S + u k̂ᵀ                                           (S[i][j] += u[i] k̂[j])
//   o[t][h] = S q̂                                          (o[i] = Σ_j S[i][j] q̂[j])
// This is transformers' torch_recurrent_gated_delta_rule (use_qk_l2norm_in_kernel=True) with its
// state [dk][dv] stored transposed as [dv][dk] (the vLLM/SGLang pool layout), so a row S[i][:]
// is contiguous over dk.
//
// Layouts (per rank, T packed tokens):
//   q, k: [T][Hk][dk] and v: [T][Hv][dv] inside rows of stride qkv_stride (elements), i.e. the
//         conv output mixed_qkv [T, 2K+V] gives q = mixed_qkv, k = mixed_qkv + K,
//         v = mixed_qkv + 2K, qkv_stride = 2K+V;
//   g, beta: [T][Hv] dense fp32 (from gdn_gating);
//   state_pool: [num_slots][Hv][dv][dk] fp32, this layer's pool base; updated in place;
//   out: [T][Hv][dv] dense.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/gdn_types.h"

namespace ds::kernels {

namespace cpu {

// Plain per-token recurrence over a variable-length batch. Sequences with has_initial_state = 0
// start from S = 0; every sequence's final state is written to its slot.
void gated_delta_rule_prefill(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g,
                              const float* beta, float* state_pool, const GdnVarlenBatch& batch, const GdnDims& dims,
                              float* out);

// One token per sequence (row b of q/k/v/g/beta/out is sequence b), always from the slot state.
void gated_delta_rule_decode(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g,
                             const float* beta, float* state_pool, const int32_t* slots, int64_t batch_size,
                             const GdnDims& dims, float* out);

// The chunked (WY / UT-transform) form of the same prefill, computed in fp32 on the CPU with
// chunk size `chunk`: the oracle for the CUDA chunked kernels' intermediate algebra, and the proof
// in the unit tests that chunked == recurrent. Same contract as gated_delta_rule_prefill.
void gated_delta_rule_prefill_chunked(const float* q, const float* k, const float* v, int64_t qkv_stride,
                                      const float* g, const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                      const GdnDims& dims, int64_t chunk, float* out);

}  // namespace cpu

namespace cuda {

// CUDA kernels require dk = dv = 128 (every published model); other dims throw
// std::invalid_argument. q, k, v, out are BF16; g, beta, state fp32; fp32 math (the chunked prefill:
// BF16 tensor-core operands, fp32 accumulation). All batch arrays
// in device memory. No allocation, no host synchronisation: CUDA-graph safe.

// Decode: one launch, one token per sequence, slots [batch_size].
void gated_delta_rule_decode(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                             const float* beta, float* state_pool, const int32_t* slots, int64_t batch_size,
                             const GdnDims& dims, bf16* out, cudaStream_t stream);

// Prefill "v1": per-token recurrence with the state in registers, one block per
// (sequence, value head, slice of dv). Baseline for the chunked version; needs no workspace.
void gated_delta_rule_prefill_recurrent(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                                        const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                        const GdnDims& dims, bf16* out, cudaStream_t stream);

// Bytes of device workspace gated_delta_rule_prefill_chunked needs for a batch of this size
// (depends only on the arguments, so a caller can size it once for its max tokens / sequences).
size_t gated_delta_rule_prefill_workspace_bytes(int64_t num_tokens, int64_t num_seqs, const GdnDims& dims);

// Prefill "v3": chunked algorithm (chunk 64, WY/UT form) on BF16 tensor cores with fp32
// accumulation (BF16 operands as in FLA: the final state is within a few BF16 roundings of v1's). `workspace` is a device buffer of at
// least gated_delta_rule_prefill_workspace_bytes(...) bytes (throws std::invalid_argument if
// workspace_bytes is smaller).
void gated_delta_rule_prefill_chunked(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                                      const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                      const GdnDims& dims, void* workspace, size_t workspace_bytes, bf16* out,
                                      cudaStream_t stream);

// What the model calls: the fastest correct prefill. Chunked when the workspace is given (non-null
// with enough bytes) and the longest sequence is over 32 tokens; otherwise the recurrent v1.
void gated_delta_rule_prefill(const bf16* q, const bf16* k, const bf16* v, int64_t qkv_stride, const float* g,
                              const float* beta, float* state_pool, const GdnVarlenBatch& batch, const GdnDims& dims,
                              void* workspace, size_t workspace_bytes, bf16* out, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
