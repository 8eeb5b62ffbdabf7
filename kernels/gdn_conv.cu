#include <stdexcept>

#include "kernels/cuda_utils.cuh"
#include "kernels/gdn_batch_check.h"
#include "kernels/gdn_conv.h"

namespace ds::kernels::cuda {

namespace {

using cuda_utils::as_nv;

// Channels per thread: one 16-byte vector of BF16 inputs.
constexpr int kVec = 8;
constexpr int kThreads = 128;

// Where sequence s's inputs live and whether it continues from its slot's state.
struct SequenceView {
  int64_t start;
  int64_t end;
  float* state;  // this sequence's slot: [C][3]
  bool from_state;
};

__device__ __forceinline__ SequenceView sequence_view(const GdnVarlenBatch& batch, float* conv_state_pool,
                                                      int64_t channels, int64_t s) {
  return {batch.cu_seqlens[s], batch.cu_seqlens[s + 1],
          conv_state_pool + int64_t(batch.slots[s]) * channels * kGdnConvStateLen,
          batch.has_initial_state == nullptr || batch.has_initial_state[s] != 0};
}

// Inputs of channels [c, c+kVec) at packed token t of the sequence: x itself for t >= start,
// else the conv state (t in [start-3, start)) or zeros.
__device__ __forceinline__ void inputs_at(const __nv_bfloat16* x, int64_t x_stride, bool x_vec_ok,
                                          const SequenceView& seq, int64_t c, int64_t t, float (&dst)[kVec]) {
  if (t >= seq.start) {
    cuda_utils::load_vec_or_scalar<kVec>(x + t * x_stride + c, dst, x_vec_ok);
    return;
  }
  const int64_t j = kGdnConvStateLen + (t - seq.start);  // 0 oldest .. 2 newest
#pragma unroll
  for (int i = 0; i < kVec; ++i) dst[i] = seq.from_state ? seq.state[(c + i) * kGdnConvStateLen + j] : 0.f;
}

// grid (T, channel blocks): output of token blockIdx.x for kVec channels per thread.
__global__ void conv_prefill_kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride, bool x_vec_ok,
                                    const __nv_bfloat16* __restrict__ weight, int64_t channels,
                                    float* __restrict__ conv_state_pool, GdnVarlenBatch batch,
                                    __nv_bfloat16* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const int64_t c = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  if (c >= channels) return;
  const SequenceView seq =
      sequence_view(batch, conv_state_pool, channels, cuda_utils::find_sequence(batch.cu_seqlens, batch.num_seqs, t));
  float w[kVec][kGdnConvKernel];
#pragma unroll
  for (int i = 0; i < kVec; ++i) cuda_utils::load_vec<kGdnConvKernel>(weight + (c + i) * kGdnConvKernel, w[i]);
  float acc[kVec] = {};
#pragma unroll
  for (int j = 0; j < kGdnConvKernel; ++j) {
    float in[kVec];
    inputs_at(x, x_stride, x_vec_ok, seq, c, t - (kGdnConvKernel - 1) + j, in);
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] += w[i][j] * in[i];
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) acc[i] = cuda_utils::silu(acc[i]);
  cuda_utils::store_vec<kVec>(out + t * channels + c, acc);
}

// grid (num_seqs, channel blocks): the sequence's last 3 inputs become its slot's state. Runs
// after conv_prefill_kernel (same stream), which read the old state.
__global__ void conv_state_update_kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride, bool x_vec_ok,
                                         int64_t channels, float* __restrict__ conv_state_pool, GdnVarlenBatch batch) {
  const int64_t s = blockIdx.x;
  const int64_t c = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  if (c >= channels) return;
  const SequenceView seq = sequence_view(batch, conv_state_pool, channels, s);
  float last[kGdnConvStateLen][kVec];
#pragma unroll
  for (int j = 0; j < kGdnConvStateLen; ++j)
    inputs_at(x, x_stride, x_vec_ok, seq, c, seq.end - kGdnConvStateLen + j, last[j]);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
#pragma unroll
    for (int j = 0; j < kGdnConvStateLen; ++j) seq.state[(c + i) * kGdnConvStateLen + j] = last[j][i];
  }
}

// grid (B, channel blocks): one token per sequence, state shifted in place. A thread's 8 channels'
// states ([channel][3] fp32) are 96 contiguous bytes, moved as six 16-byte pieces each way.
__global__ void conv_decode_kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride, bool x_vec_ok,
                                   const __nv_bfloat16* __restrict__ weight, int64_t channels,
                                   float* __restrict__ conv_state_pool, const int32_t* __restrict__ slots,
                                   __nv_bfloat16* __restrict__ out) {
  constexpr int kStateFloats = kVec * kGdnConvStateLen;
  const int64_t b = blockIdx.x;
  const int64_t c = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  if (c >= channels) return;
  float* state = conv_state_pool + (int64_t(slots[b]) * channels + c) * kGdnConvStateLen;
  float st[kStateFloats];
#pragma unroll
  for (int p = 0; p < kStateFloats / 4; ++p) {
    cuda_utils::load_vec<4>(state + 4 * p, reinterpret_cast<float(&)[4]>(st[4 * p]));
  }
  float in[kVec];
  cuda_utils::load_vec_or_scalar<kVec>(x + b * x_stride + c, in, x_vec_ok);
  float acc[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    float w[kGdnConvKernel];
    cuda_utils::load_vec<kGdnConvKernel>(weight + (c + i) * kGdnConvKernel, w);
    float* s = st + i * kGdnConvStateLen;
    acc[i] = cuda_utils::silu(w[0] * s[0] + w[1] * s[1] + w[2] * s[2] + w[3] * in[i]);
    s[0] = s[1];
    s[1] = s[2];
    s[2] = in[i];
  }
  cuda_utils::store_vec<kStateFloats>(state, st);
  cuda_utils::store_vec<kVec>(out + b * channels + c, acc);
}

void check_conv_args(int64_t x_stride, int64_t channels, const char* op) {
  check_positive(channels, op, "channels");
  check_row_stride(x_stride, channels, op, "x");
  if (channels % kVec != 0) {
    throw std::invalid_argument(std::string(op) + ": the CUDA conv needs channels to be a multiple of 8");
  }
}

}  // namespace

void gdn_conv_prefill(const bf16* x, int64_t x_stride, const bf16* weight, int64_t channels, float* conv_state_pool,
                      const GdnVarlenBatch& batch, bf16* out, cudaStream_t stream) {
  check_conv_args(x_stride, channels, "gdn_conv_prefill");
  check_varlen_batch_shape(batch, "gdn_conv_prefill");
  if (batch.num_seqs == 0) return;
  const bool x_vec_ok = cuda_utils::rows_vector_aligned(x, x_stride, 16);
  const unsigned channel_blocks = cuda_utils::grid_dim(channels / kVec, kThreads);
  if (batch.num_tokens > 0) {
    conv_prefill_kernel<<<dim3(unsigned(batch.num_tokens), channel_blocks), kThreads, 0, stream>>>(
        as_nv(x), x_stride, x_vec_ok, as_nv(weight), channels, conv_state_pool, batch, as_nv(out));
    cuda_utils::check_launch("gdn_conv_prefill");
  }
  conv_state_update_kernel<<<dim3(unsigned(batch.num_seqs), channel_blocks), kThreads, 0, stream>>>(
      as_nv(x), x_stride, x_vec_ok, channels, conv_state_pool, batch);
  cuda_utils::check_launch("gdn_conv_prefill (state update)");
}

void gdn_conv_decode(const bf16* x, int64_t x_stride, const bf16* weight, int64_t channels, float* conv_state_pool,
                     const int32_t* slots, int64_t batch_size, bf16* out, cudaStream_t stream) {
  check_conv_args(x_stride, channels, "gdn_conv_decode");
  if (!cuda_utils::is_aligned(conv_state_pool, 16)) {
    throw std::invalid_argument(
        "gdn_conv_decode: the conv state pool must be 16-byte aligned (states move as 16-byte pieces)");
  }
  if (batch_size == 0) return;
  conv_decode_kernel<<<dim3(unsigned(batch_size), cuda_utils::grid_dim(channels / kVec, kThreads)), kThreads, 0,
                       stream>>>(as_nv(x), x_stride, cuda_utils::rows_vector_aligned(x, x_stride, 16), as_nv(weight),
                                 channels, conv_state_pool, slots, as_nv(out));
  cuda_utils::check_launch("gdn_conv_decode");
}

}  // namespace ds::kernels::cuda
