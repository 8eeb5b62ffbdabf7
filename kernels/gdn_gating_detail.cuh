// Internal: the gate formulas as a device function, shared by gdn_gating.cu and gdn_decode.cu.
#pragma once

namespace ds::kernels::cuda {

struct GdnGates {
  float g;     // -exp(A_log) · softplus(a + dt_bias)
  float beta;  // sigmoid(b)
};

__device__ __forceinline__ GdnGates gdn_gates(float a, float b, float A_log, float dt_bias) {
  const float x = a + dt_bias;
  const float softplus = x > 20.f ? x : log1pf(expf(x));
  return {-expf(A_log) * softplus, 1.f / (1.f + expf(-b))};
}

}  // namespace ds::kernels::cuda
