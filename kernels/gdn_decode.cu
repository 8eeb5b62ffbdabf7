#include <stdexcept>

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule_decode.cuh"
#include "kernels/gdn_batch_check.h"
#include "kernels/gdn_conv_detail.cuh"
#include "kernels/gdn_decode.h"

namespace ds::kernels::cuda {

size_t gdn_decode_scratch_bytes(int64_t batch_size, const GdnDims& dims) {
  return size_t(batch_size) * size_t(dims.conv_dim()) * sizeof(float);
}

void gdn_decode(const GdnDecodeInputs<bf16>& in, const GdnDecodeState& state, int64_t batch_size, const GdnDims& dims,
                void* scratch, size_t scratch_bytes, bf16* out, cudaStream_t stream) {
  using cuda_utils::as_nv;
  check_cuda_head_dims(dims, "gdn_decode");
  const int64_t C = dims.conv_dim();
  check_row_stride(in.mixed_qkv_stride, C, "gdn_decode", "mixed_qkv");
  check_row_stride(in.z_stride, dims.value_dim(), "gdn_decode", "z");
  check_row_stride(in.a_stride, dims.num_v_heads, "gdn_decode", "a");
  check_row_stride(in.b_stride, dims.num_v_heads, "gdn_decode", "b");
  if (scratch_bytes < gdn_decode_scratch_bytes(batch_size, dims) || !cuda_utils::is_aligned(scratch, 16)) {
    throw std::invalid_argument("gdn_decode: scratch must be 16-byte aligned and hold gdn_decode_scratch_bytes()");
  }
  if (batch_size <= 0) return;
  float* qkv = static_cast<float*>(scratch);

  conv::decode_kernel<float>
      <<<dim3(unsigned(batch_size), cuda_utils::grid_dim(C / conv::kVec, conv::kThreads)), conv::kThreads, 0, stream>>>(
          as_nv(in.mixed_qkv), in.mixed_qkv_stride,
          cuda_utils::rows_vector_aligned(in.mixed_qkv, in.mixed_qkv_stride, 16), as_nv(in.conv_weight), C,
          state.conv_state_pool, state.slots, qkv);
  cuda_utils::check_launch("gdn_decode (conv)");

  gdr::DecodeParams<float> p{};
  p.q = qkv;
  p.k = qkv + dims.key_dim();
  p.v = qkv + 2 * dims.key_dim();
  p.qkv_stride = C;
  p.a = as_nv(in.a);
  p.a_stride = in.a_stride;
  p.b = as_nv(in.b);
  p.b_stride = in.b_stride;
  p.A_log = in.A_log;
  p.dt_bias = in.dt_bias;
  p.z = as_nv(in.z);
  p.z_stride = in.z_stride;
  p.z_vec_ok = cuda_utils::rows_vector_aligned(in.z, in.z_stride, 8);
  p.norm_weight = as_nv(in.norm_weight);
  p.norm_eps = in.norm_eps;
  p.state_pool = state.ssm_state_pool;
  p.slots = state.slots;
  p.num_v_heads = dims.num_v_heads;
  p.ratio = dims.ratio();
  p.out = as_nv(out);
  gdr::decode_kernel<float, true><<<unsigned(batch_size * dims.num_v_heads), gdr::kDecodeWarps * 32, 0, stream>>>(p);
  cuda_utils::check_launch("gdn_decode (recurrence)");
}

}  // namespace ds::kernels::cuda
