#include "kernels/attention.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace ds::kernels::cpu {

namespace {

// Host-side checks of everything the reference indexes with, so bad plans fail loudly.
void validate(const AttentionBatch& batch, const PagedKvCache<float>& cache) {
  if (batch.num_seqs < 0 || batch.cu_q == nullptr || batch.kv_lens == nullptr || batch.page_table == nullptr) {
    throw std::invalid_argument("attention: batch needs cu_q, kv_lens and page_table");
  }
  if (batch.cu_q[0] != 0 || batch.cu_q[batch.num_seqs] != batch.num_tokens) {
    throw std::invalid_argument("attention: cu_q must start at 0 and end at num_tokens=" +
                                std::to_string(batch.num_tokens));
  }
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.cu_q[s + 1] - batch.cu_q[s];
    const int64_t kv_len = batch.kv_lens[s];
    if (q_len < 0 || kv_len < q_len) {
      throw std::invalid_argument("attention: sequence " + std::to_string(s) + " has q_len " + std::to_string(q_len) +
                                  " and kv_len " + std::to_string(kv_len));
    }
    const int64_t pages = (kv_len + cache.page_size - 1) / cache.page_size;
    if (pages > batch.max_pages_per_seq) {
      throw std::invalid_argument("attention: sequence " + std::to_string(s) + " needs " + std::to_string(pages) +
                                  " pages, page table has " + std::to_string(batch.max_pages_per_seq));
    }
    for (int64_t p = 0; p < pages; ++p) {
      const int32_t page = batch.page_table[s * batch.max_pages_per_seq + p];
      if (page < 0 || page >= cache.num_pages) {
        throw std::invalid_argument("attention: sequence " + std::to_string(s) + " page " + std::to_string(p) +
                                    " is " + std::to_string(page) + ", pool has " + std::to_string(cache.num_pages));
      }
    }
  }
}

// Offset of (sequence s, position j, kv head h) in the cache arrays.
int64_t cache_offset(const AttentionBatch& batch, const PagedKvCache<float>& cache, int64_t s, int64_t j, int64_t h) {
  const int64_t page = batch.page_table[s * batch.max_pages_per_seq + j / cache.page_size];
  return ((page * cache.num_kv_heads + h) * cache.page_size + j % cache.page_size) * cache.head_dim;
}

}  // namespace

void write_kv(const float* k, int64_t ldk, const float* v, int64_t ldv, const AttentionBatch& batch,
              const PagedKvCache<float>& cache) {
  validate(batch, cache);
  const int64_t D = cache.head_dim;
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.cu_q[s + 1] - batch.cu_q[s];
    const int64_t first_pos = batch.kv_lens[s] - q_len;
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t t = batch.cu_q[s] + i;
      for (int64_t h = 0; h < cache.num_kv_heads; ++h) {
        const int64_t off = cache_offset(batch, cache, s, first_pos + i, h);
        for (int64_t d = 0; d < D; ++d) {
          cache.k[off + d] = k[t * ldk + h * D + d];
          cache.v[off + d] = v[t * ldv + h * D + d];
        }
      }
    }
  }
}

void attention(const AttentionIo<float>& io, const AttentionBatch& batch, const PagedKvCache<float>& cache) {
  validate(batch, cache);
  if (io.num_q_heads <= 0 || io.num_q_heads % cache.num_kv_heads != 0) {
    throw std::invalid_argument("attention: num_q_heads " + std::to_string(io.num_q_heads) +
                                " is not a positive multiple of num_kv_heads " + std::to_string(cache.num_kv_heads));
  }
  const int64_t D = cache.head_dim, Hq = io.num_q_heads, group = Hq / cache.num_kv_heads;
  std::vector<double> scores;
  std::vector<double> acc(size_t(D), 0.0);
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    const int64_t q_len = batch.cu_q[s + 1] - batch.cu_q[s];
    const int64_t first_pos = batch.kv_lens[s] - q_len;
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t t = batch.cu_q[s] + i;
      const int64_t visible = first_pos + i + 1;
      scores.assign(size_t(visible), 0.0);
      for (int64_t h = 0; h < Hq; ++h) {
        const float* q = io.q + (t * Hq + h) * D;
        const int64_t kv_head = h / group;
        double max_score = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const float* key = cache.k + cache_offset(batch, cache, s, j, kv_head);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(q[d]) * key[d];
          scores[size_t(j)] = dot * io.scale;
          max_score = std::max(max_score, scores[size_t(j)]);
        }
        double denom = 0;
        acc.assign(size_t(D), 0.0);
        for (int64_t j = 0; j < visible; ++j) {
          const double p = std::exp(scores[size_t(j)] - max_score);
          denom += p;
          const float* value = cache.v + cache_offset(batch, cache, s, j, kv_head);
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += p * value[d];
        }
        float* out = io.out + t * io.out_row_stride + h * D;
        const float* gate = io.gate ? io.gate + t * io.gate_row_stride + h * io.gate_head_stride : nullptr;
        for (int64_t d = 0; d < D; ++d) {
          const double g = gate ? 1.0 / (1.0 + std::exp(-double(gate[d]))) : 1.0;
          out[d] = float(acc[size_t(d)] / denom * g);
        }
      }
    }
  }
}

}  // namespace ds::kernels::cpu
