#include "kernels/gdn_decode.h"

#include <vector>

#include "kernels/gated_delta_rule.h"
#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_gating.h"

namespace ds::kernels::cpu {

void gdn_decode(const GdnDecodeInputs<float>& in, const GdnDecodeState& state, int64_t batch_size, const GdnDims& dims,
                float* out) {
  validate_gdn_dims(dims, "gdn_decode");
  const int64_t C = dims.conv_dim(), K = dims.key_dim(), Hv = dims.num_v_heads;
  std::vector<float> qkv(batch_size * C), g(batch_size * Hv), beta(batch_size * Hv),
      core(batch_size * dims.value_dim());
  gdn_conv_decode(in.mixed_qkv, in.mixed_qkv_stride, in.conv_weight, C, state.conv_state_pool, state.slots, batch_size,
                  qkv.data());
  gdn_gating(in.a, in.a_stride, in.b, in.b_stride, in.A_log, in.dt_bias, batch_size, Hv, g.data(), beta.data());
  gated_delta_rule_decode(qkv.data(), qkv.data() + K, qkv.data() + 2 * K, C, g.data(), beta.data(),
                          state.ssm_state_pool, state.slots, batch_size, dims, core.data());
  gated_rms_norm(core.data(), in.z, in.z_stride, in.norm_weight, batch_size, Hv, dims.head_v_dim, in.norm_eps, out);
}

}  // namespace ds::kernels::cpu
