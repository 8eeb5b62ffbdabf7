#include "kernels/gated_delta_rule.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gdn_batch_check.h"

namespace ds::kernels::cpu {

namespace {

constexpr float kL2NormEps = 1e-6f;

// dst = src / sqrt(|src|² + 1e-6) · scale
void l2_normalize(const float* src, int64_t n, float scale, float* dst) {
  double sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) sum_sq += double(src[i]) * src[i];
  const float f = float(1.0 / std::sqrt(sum_sq + kL2NormEps)) * scale;
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * f;
}

float dot(const float* a, const float* b, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(a[i]) * b[i];
  return float(acc);
}

// The inputs of one layer call and where value head h of token t finds them.
struct RuleInputs {
  const float* q;
  const float* k;
  const float* v;
  int64_t stride;
  const float* g;
  const float* beta;
  const GdnDims& d;

  const float* q_at(int64_t t, int64_t h) const { return q + t * stride + (h / d.ratio()) * d.head_k_dim; }
  const float* k_at(int64_t t, int64_t h) const { return k + t * stride + (h / d.ratio()) * d.head_k_dim; }
  const float* v_at(int64_t t, int64_t h) const { return v + t * stride + h * d.head_v_dim; }
  float g_at(int64_t t, int64_t h) const { return g[t * d.num_v_heads + h]; }
  float beta_at(int64_t t, int64_t h) const { return beta[t * d.num_v_heads + h]; }
  float q_scale() const { return 1.f / std::sqrt(float(d.head_k_dim)); }
};

// One token of the recurrence on head state S [dv][dk]; writes o [dv].
void recurrent_step(const RuleInputs& in, int64_t t, int64_t h, float* S, float* o) {
  const int64_t dk = in.d.head_k_dim, dv = in.d.head_v_dim;
  std::vector<float> qn(dk), kn(dk);
  l2_normalize(in.q_at(t, h), dk, in.q_scale(), qn.data());
  l2_normalize(in.k_at(t, h), dk, 1.f, kn.data());
  const float decay = std::exp(in.g_at(t, h)), beta = in.beta_at(t, h);
  const float* v = in.v_at(t, h);
  for (int64_t i = 0; i < dv; ++i) {
    float* row = S + i * dk;
    for (int64_t j = 0; j < dk; ++j) row[j] *= decay;
    const float u = beta * (v[i] - dot(row, kn.data(), dk));
    for (int64_t j = 0; j < dk; ++j) row[j] += u * kn[j];
    o[i] = dot(row, qn.data(), dk);
  }
}

// Tokens [t0, t0+L) of one head by the chunked (WY / UT) form, from state M [dv][dk] (updated).
// With γ_i the cumulative log decay inside the chunk and A_ij = β_i e^{γ_i-γ_j} k_i·k_j (j < i):
//   W_k = (I+A)⁻¹ diag(β e^γ) K,  W_v = (I+A)⁻¹ diag(β) V,  U = W_v − W_k Mᵀ,
//   O = diag(e^γ) Q Mᵀ + (causal e^{γ_i-γ_j} ⊙ Q Kᵀ) U,  M ← e^{γ_L} M + Uᵀ diag(e^{γ_L-γ}) K.
void chunk_step(const RuleInputs& in, int64_t t0, int64_t L, int64_t h, float* M, float* out) {
  const int64_t dk = in.d.head_k_dim, dv = in.d.head_v_dim, Hv = in.d.num_v_heads;
  std::vector<float> Q(L * dk), K(L * dk), gamma(L), Wk(L * dk), Wv(L * dv), U(L * dv);
  float cum = 0;
  for (int64_t i = 0; i < L; ++i) {
    l2_normalize(in.q_at(t0 + i, h), dk, in.q_scale(), &Q[i * dk]);
    l2_normalize(in.k_at(t0 + i, h), dk, 1.f, &K[i * dk]);
    cum += in.g_at(t0 + i, h);
    gamma[i] = cum;
  }
  // Forward substitution of (I + A) W = B, row by row.
  for (int64_t i = 0; i < L; ++i) {
    const float beta = in.beta_at(t0 + i, h);
    const float* v = in.v_at(t0 + i, h);
    for (int64_t j = 0; j < dk; ++j) Wk[i * dk + j] = beta * std::exp(gamma[i]) * K[i * dk + j];
    for (int64_t p = 0; p < dv; ++p) Wv[i * dv + p] = beta * v[p];
    for (int64_t j = 0; j < i; ++j) {
      const float a = beta * std::exp(gamma[i] - gamma[j]) * dot(&K[i * dk], &K[j * dk], dk);
      for (int64_t c = 0; c < dk; ++c) Wk[i * dk + c] -= a * Wk[j * dk + c];
      for (int64_t p = 0; p < dv; ++p) Wv[i * dv + p] -= a * Wv[j * dv + p];
    }
  }
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t p = 0; p < dv; ++p) U[i * dv + p] = Wv[i * dv + p] - dot(&Wk[i * dk], &M[p * dk], dk);
  }
  for (int64_t i = 0; i < L; ++i) {
    float* o = out + ((t0 + i) * Hv + h) * dv;
    for (int64_t p = 0; p < dv; ++p) o[p] = std::exp(gamma[i]) * dot(&Q[i * dk], &M[p * dk], dk);
    for (int64_t j = 0; j <= i; ++j) {
      const float qk = std::exp(gamma[i] - gamma[j]) * dot(&Q[i * dk], &K[j * dk], dk);
      for (int64_t p = 0; p < dv; ++p) o[p] += qk * U[j * dv + p];
    }
  }
  const float last = gamma[L - 1];
  for (int64_t p = 0; p < dv; ++p) {
    for (int64_t c = 0; c < dk; ++c) M[p * dk + c] *= std::exp(last);
  }
  for (int64_t i = 0; i < L; ++i) {
    const float w = std::exp(last - gamma[i]);
    for (int64_t p = 0; p < dv; ++p) {
      const float wu = w * U[i * dv + p];
      for (int64_t c = 0; c < dk; ++c) M[p * dk + c] += wu * K[i * dk + c];
    }
  }
}

// Runs `per_head(t_begin, t_end, h, S)` for every (sequence, value head) with S the head's state,
// initialised from the slot or zeros, and stores S back into the slot afterwards.
template <typename PerHead>
void for_each_sequence_head(float* state_pool, const GdnVarlenBatch& batch, const GdnDims& d, PerHead per_head) {
  const int64_t head_floats = d.head_v_dim * d.head_k_dim;
  std::vector<float> S(head_floats);
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const bool from_state = batch.has_initial_state == nullptr || batch.has_initial_state[s] != 0;
    float* slot = state_pool + batch.slots[s] * d.state_floats();
    for (int64_t h = 0; h < d.num_v_heads; ++h) {
      float* slot_head = slot + h * head_floats;
      for (int64_t i = 0; i < head_floats; ++i) S[i] = from_state ? slot_head[i] : 0.f;
      per_head(batch.cu_seqlens[s], batch.cu_seqlens[s + 1], h, S.data());
      for (int64_t i = 0; i < head_floats; ++i) slot_head[i] = S[i];
    }
  }
}

void check_rule_args(int64_t qkv_stride, const GdnDims& dims, const char* op) {
  validate_gdn_dims(dims, op);
  check_row_stride(qkv_stride, dims.conv_dim(), op, "q/k/v");
}

}  // namespace

void gated_delta_rule_prefill(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g,
                              const float* beta, float* state_pool, const GdnVarlenBatch& batch, const GdnDims& dims,
                              float* out) {
  check_rule_args(qkv_stride, dims, "gated_delta_rule_prefill");
  check_host_varlen_batch(batch, "gated_delta_rule_prefill");
  const RuleInputs in{q, k, v, qkv_stride, g, beta, dims};
  for_each_sequence_head(state_pool, batch, dims, [&](int64_t t_begin, int64_t t_end, int64_t h, float* S) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      recurrent_step(in, t, h, S, out + (t * dims.num_v_heads + h) * dims.head_v_dim);
    }
  });
}

void gated_delta_rule_decode(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g,
                             const float* beta, float* state_pool, const int32_t* slots, int64_t batch_size,
                             const GdnDims& dims, float* out) {
  check_rule_args(qkv_stride, dims, "gated_delta_rule_decode");
  const RuleInputs in{q, k, v, qkv_stride, g, beta, dims};
  for (int64_t b = 0; b < batch_size; ++b) {
    float* slot = state_pool + slots[b] * dims.state_floats();
    for (int64_t h = 0; h < dims.num_v_heads; ++h) {
      recurrent_step(in, b, h, slot + h * dims.head_v_dim * dims.head_k_dim,
                     out + (b * dims.num_v_heads + h) * dims.head_v_dim);
    }
  }
}

void gated_delta_rule_prefill_chunked(const float* q, const float* k, const float* v, int64_t qkv_stride,
                                      const float* g, const float* beta, float* state_pool, const GdnVarlenBatch& batch,
                                      const GdnDims& dims, int64_t chunk, float* out) {
  check_rule_args(qkv_stride, dims, "gated_delta_rule_prefill_chunked");
  check_host_varlen_batch(batch, "gated_delta_rule_prefill_chunked");
  check_positive(chunk, "gated_delta_rule_prefill_chunked", "chunk");
  const RuleInputs in{q, k, v, qkv_stride, g, beta, dims};
  for_each_sequence_head(state_pool, batch, dims, [&](int64_t t_begin, int64_t t_end, int64_t h, float* S) {
    for (int64_t t0 = t_begin; t0 < t_end; t0 += chunk) {
      chunk_step(in, t0, std::min(chunk, t_end - t0), h, S, out);
    }
  });
}

}  // namespace ds::kernels::cpu
