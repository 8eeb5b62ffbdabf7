// Causal GQA attention over a paged KV cache (the full-attention layers of Qwen3.5 / Qwen3-Next),
// with the layer's output gate fused: out = softmax(q·Kᵀ·scale, causal) · V · sigmoid(gate).
//
// KV cache of one layer (per rank): two arrays of num_pages pages, each page
//   k_cache[page][kv_head][slot][d],  v_cache[page][kv_head][slot][d]     slot < page_size, d < head_dim
// i.e. element offset ((page·Hkv + h)·page_size + slot)·D + d. A head's keys within a page are one
// contiguous page_size·D block. Any page_size >= 1 works; 16..256 are typical. BF16 on CUDA, fp32 on CPU.
//
// A batch of sequences, each contributing q_len(s) = cu_q[s+1] − cu_q[s] >= 0 new tokens, packed
// in token order (sequence 0's tokens, then sequence 1's, ...). kv_lens[s] is the sequence's
// length INCLUDING its new tokens, so new token i of s sits at position kv_lens[s] − q_len(s) + i
// and attends keys at positions 0 .. that position (its cached prefix, earlier new tokens, itself).
// Page p of sequence s holds positions [p·page_size, (p+1)·page_size): position j is at
// page_table[s·max_pages_per_seq + j/page_size], slot j % page_size. Pages are owned by the caller
// (the front end's page accounting); the kernels only read/write the slots the table names.
//
// Decode (one new token per sequence) and chunked prefill/extend are the same call; mixed batches work.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace ds::kernels {

template <typename T>
struct PagedKvCache {
  T* k = nullptr;  // [num_pages][num_kv_heads][page_size][head_dim]
  T* v = nullptr;  // same
  int64_t num_pages = 0;
  int64_t page_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Batch description; pointers are host memory for ds::kernels::cpu, device memory for cuda.
struct AttentionBatch {
  const int32_t* cu_q = nullptr;        // [num_seqs + 1], cu_q[0] = 0, non-decreasing
  const int32_t* kv_lens = nullptr;     // [num_seqs], kv_lens[s] >= q_len(s)
  const int32_t* page_table = nullptr;  // [num_seqs][max_pages_per_seq]
  int64_t max_pages_per_seq = 0;
  int64_t num_seqs = 0;
  int64_t num_tokens = 0;  // cu_q[num_seqs]
  // Host-side upper bounds, needed by the CUDA launch geometry (ignored on CPU). Must be >= the
  // true maxima; the kernels clamp nothing else.
  int64_t max_q_len = 0;   // max over s of q_len(s)
  int64_t max_kv_len = 0;  // max over s of kv_lens[s]
};

// The layer's query side. q is [T, Hq, D] dense (qk_norm_rope's output). gate may be nullptr (no
// gate); otherwise gate for (t, h) is D values at gate + t·gate_row_stride + h·gate_head_stride
// (the strided view into q_proj's output: row stride Hq·2D, head stride 2D, base q_proj_out + D).
// out is [T, Hq·D] with row stride out_row_stride (o_proj's input).
template <typename T>
struct AttentionIo {
  const T* q = nullptr;
  const T* gate = nullptr;
  int64_t gate_row_stride = 0;
  int64_t gate_head_stride = 0;
  T* out = nullptr;
  int64_t out_row_stride = 0;
  int64_t num_q_heads = 0;  // Hq, a multiple of the cache's num_kv_heads
  float scale = 0.f;        // softmax scale, head_dim^-0.5 for these models
};

namespace cpu {

// Writes the batch's new keys/values into their pages: k [T, Hkv, D] with row stride ldk, v with
// row stride ldv (views are fine, e.g. v_proj's output). Token t of sequence s goes to position
// kv_lens[s] − q_len(s) + (t − cu_q[s]).
void write_kv(const float* k, int64_t ldk, const float* v, int64_t ldv, const AttentionBatch& batch,
              const PagedKvCache<float>& cache);

// Plain fp32 reference: per (token, head), scores over the visible positions, softmax, weighted
// sum of V, times sigmoid(gate). Expects write_kv() to have run for this batch.
void attention(const AttentionIo<float>& io, const AttentionBatch& batch, const PagedKvCache<float>& cache);

}  // namespace cpu

namespace cuda {

// BF16 k/v (device), one launch; batch arrays in device memory.
void write_kv(const bf16* k, int64_t ldk, const bf16* v, int64_t ldv, const AttentionBatch& batch,
              const PagedKvCache<bf16>& cache, cudaStream_t stream);

// Bytes of scratch attention() needs for a batch of num_tokens tokens (split-K partial results).
// Sizing it for the largest batch once is enough; 0 is allowed (then no split-K).
size_t attention_workspace_bytes(int64_t num_tokens, int64_t num_q_heads, int64_t head_dim);

// Flash-attention style kernel on tensor cores (mma.sync m16n8k16 BF16, fp32 accumulation, online
// softmax in fp32). A block owns one sequence, one KV head and 64 query rows, where a row is a
// (token, q-head of that KV head's group) pair, so K/V tiles are read once for the whole GQA group.
// When the grid would be too small to fill the GPU (decode, short batches) the KV range of each
// sequence is split across blocks (split-K) and a second small kernel merges the partial results
// (log-sum-exp) and applies the gate. head_dim 128 or 256. Asynchronous on `stream`; the launch
// geometry depends only on (num_seqs, max_q_len, max_kv_len, heads), so it is graph-capturable.
void attention(const AttentionIo<bf16>& io, const AttentionBatch& batch, const PagedKvCache<bf16>& cache,
               void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda

}  // namespace ds::kernels
