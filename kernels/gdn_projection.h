// The GDN input projection's split/reshape/cat: fused_qkvzba_split_reshape_cat.
//
// The default ("fused") forward needs no kernel from this header: one merged GEMM writes
// out [T, dims.merged_width()] and mixed_qkv, z, b, a are row-strided views of it (see
// GdnDims::z_offset() etc.); every consumer (gdn_conv, gdn_gating, gated_norm, gdn_decode) takes
// a row stride. The split kernel below serves the "split" forward (two GEMMs, `qkvz` and `ba`,
// as SGLang runs it) for both checkpoint layouts, kept for A/B comparison.
#pragma once

#include <cstdint>

#include "kernels/common.h"
#include "kernels/gdn_types.h"

namespace ds::kernels {

// Column order of the two GEMM outputs the split kernel reads. With Hk key heads, r = Hv/Hk:
enum class QkvzLayout {
  // Qwen3.5 (in_proj_qkv and in_proj_z stacked): qkvz row = [q_all (K) | k_all (K) | v_all (V) |
  // z_all (V)], each head-major (head i of q at cols [i·dk, (i+1)·dk)); ba row = [b_all (Hv) |
  // a_all (Hv)].
  kContiguous,
  // Qwen3-Next (in_proj_qkvz / in_proj_ba): per key-head group g = 0..Hk-1, qkvz row =
  // [... | q_g (dk) | k_g (dk) | v_g (r·dv) | z_g (r·dv) | ...], group stride 2dk + 2r·dv, where
  // v_g holds value heads g·r .. g·r+r-1 in order; ba row = [... | b_g (r) | a_g (r) | ...].
  kInterleavedGroups,
};

namespace cpu {

// qkvz: [T, 2K+2V] with row stride qkvz_stride (elements, >= 2K+2V); ba: [T, 2Hv], row stride
// ba_stride (>= 2Hv). Writes dense outputs:
//   mixed_qkv [T, 2K+V] = [q_all | k_all | v_all] (head-major, value head j at cols 2K + j·dv),
//   z [T, Hv, dv], b [T, Hv], a [T, Hv].
// Throws std::invalid_argument on bad dims or strides.
void fused_qkvzba_split_reshape_cat(const float* qkvz, int64_t qkvz_stride, const float* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, float* mixed_qkv,
                                    float* z, float* b, float* a);

}  // namespace cpu

namespace cuda {

// Same contract as the CPU version, device pointers, in BF16 or FP32 (no conversion: outputs have
// the input dtype). Any ratio r, any T (64-bit offsets). One launch on `stream`; no allocation, no
// host synchronisation (CUDA-graph safe).
void fused_qkvzba_split_reshape_cat(const bf16* qkvz, int64_t qkvz_stride, const bf16* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, bf16* mixed_qkv,
                                    bf16* z, bf16* b, bf16* a, cudaStream_t stream);
void fused_qkvzba_split_reshape_cat(const float* qkvz, int64_t qkvz_stride, const float* ba, int64_t ba_stride,
                                    int64_t num_tokens, const GdnDims& dims, QkvzLayout layout, float* mixed_qkv,
                                    float* z, float* b, float* a, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
