#include <stdexcept>
#include <string>

#include "kernels/cuda_utils.cuh"
#include "kernels/gated_delta_rule_decode.cuh"
#include "kernels/gdn_batch_check.h"
#include "kernels/gdn_decode.h"

namespace ds::kernels::cuda {

void gdn_decode(const GdnDecodeInputs<bf16>& in, const GdnDecodeState& state, int64_t batch_size, const GdnDims& dims,
                bf16* out, cudaStream_t stream, const Fp8Rows* fp8_out) {
  using cuda_utils::as_nv;
  check_cuda_head_dims(dims, "gdn_decode");
  check_row_stride(in.mixed_qkv_stride, dims.conv_dim(), "gdn_decode", "mixed_qkv");
  check_row_stride(in.z_stride, dims.value_dim(), "gdn_decode", "z");
  check_row_stride(in.a_stride, dims.num_v_heads, "gdn_decode", "a");
  check_row_stride(in.b_stride, dims.num_v_heads, "gdn_decode", "b");
  if (dims.ratio() > 8) {
    throw std::invalid_argument("gdn_decode: num_v_heads / num_k_heads must be at most 8 (one cluster per key head)");
  }
  if (fp8_out != nullptr && (!fp8_out->codes || !fp8_out->scales || !cuda_utils::is_aligned(fp8_out->codes, 4))) {
    throw std::invalid_argument("gdn_decode: fp8_out needs codes (4-byte aligned) and scales");
  }
  if (batch_size <= 0) return;

  gdr::DecodeParams p{};
  p.q = as_nv(in.mixed_qkv);
  p.qkv_stride = in.mixed_qkv_stride;
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
  p.conv_weight = as_nv(in.conv_weight);
  p.conv_state_pool = state.conv_state_pool;
  p.key_dim = dims.key_dim();
  p.conv_dim = dims.conv_dim();
  p.state_pool = state.ssm_state_pool;
  p.slots = state.slots;
  p.num_v_heads = dims.num_v_heads;
  p.ratio = dims.ratio();
  p.out = as_nv(out);
  p.fp8_codes = fp8_out ? fp8_out->codes : nullptr;
  p.fp8_scales = fp8_out ? fp8_out->scales : nullptr;

  // Clusters of r blocks: the value heads of one key head (blockIdx.x = b·Hv + h, Hv = Hk·r).
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(batch_size * dims.num_v_heads));
  config.blockDim = dim3(gdr::kDecodeWarps * 32);
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = unsigned(dims.ratio());
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&config, gdr::decode_kernel<true>, p);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("gdn_decode: launch failed: ") + cudaGetErrorString(err));
}

}  // namespace ds::kernels::cuda
