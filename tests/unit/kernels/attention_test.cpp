#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "tests/unit/kernels/random_data.h"

namespace ds::kernels {
namespace {

using test::random_normal;

// A cache pool plus one sequence's shuffled page table, so logical order != physical order.
struct PagedSetup {
  std::vector<float> k, v;
  std::vector<int32_t> page_table;
  PagedKvCache<float> cache;
  PagedSetup(int64_t num_pages, int64_t page_size, int64_t Hkv, int64_t D, int64_t num_seqs, int64_t pages_per_seq,
             unsigned seed)
      : k(size_t(num_pages * page_size * Hkv * D), NAN), v(k.size(), NAN) {
    std::vector<int32_t> pages(static_cast<size_t>(num_pages));
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), std::mt19937(seed));
    page_table.assign(pages.begin(), pages.begin() + num_seqs * pages_per_seq);
    cache = {k.data(), v.data(), num_pages, page_size, Hkv, D};
  }
};

// Dense causal GQA attention of one sequence whose whole history is keys/values [L, Hkv, D]; the
// last n positions are the queries q [n, Hq, D].
std::vector<float> dense_attention(const std::vector<float>& q, const std::vector<float>& keys,
                                   const std::vector<float>& values, const float* gate, int64_t gate_row_stride,
                                   int64_t n, int64_t L, int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  std::vector<float> out(size_t(n * Hq * D));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / (Hq / Hkv), visible = L - n + i + 1;
      std::vector<double> p(static_cast<size_t>(visible));
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < visible; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += double(q[size_t((i * Hq + h) * D + d)]) * keys[size_t((j * Hkv + kvh) * D + d)];
        p[size_t(j)] = s * scale;
        mx = std::max(mx, p[size_t(j)]);
      }
      for (auto& x : p) sum += x = std::exp(x - mx);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < visible; ++j) acc += p[size_t(j)] * values[size_t((j * Hkv + kvh) * D + d)];
        const double g = gate ? 1 / (1 + std::exp(-double(gate[i * gate_row_stride + h * D + d]))) : 1.0;
        out[size_t((i * Hq + h) * D + d)] = float(acc / sum * g);
      }
    }
  }
  return out;
}

TEST(CpuAttention, PagedPrefillEqualsDenseAttention) {
  const int64_t Hq = 4, Hkv = 2, D = 16, P = 4, L = 11;
  PagedSetup setup(8, P, Hkv, D, 1, 3, 1);
  const auto q = random_normal(size_t(L * Hq * D), 2), k = random_normal(size_t(L * Hkv * D), 3),
             v = random_normal(size_t(L * Hkv * D), 4), gate = random_normal(size_t(L * Hq * D), 5);
  const int32_t cu_q[] = {0, int32_t(L)}, kv_lens[] = {int32_t(L)};
  AttentionBatch batch{cu_q, kv_lens, setup.page_table.data(), 3, 1, L, L, L};
  cpu::write_kv(k.data(), Hkv * D, v.data(), Hkv * D, batch, setup.cache);
  std::vector<float> out(size_t(L * Hq * D), NAN);
  const float scale = 1.f / std::sqrt(float(D));
  cpu::attention({q.data(), gate.data(), Hq * D, D, out.data(), Hq * D, Hq, scale}, batch, setup.cache);
  const auto expected = dense_attention(q, k, v, gate.data(), Hq * D, L, L, Hq, Hkv, D, scale);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], expected[i], 1e-5) << i;
}

TEST(CpuAttention, ChunkedPrefillAndDecodeMatchOneShot) {
  // Sequence A: 7 prompt tokens in chunks of 4 and 3, then 2 decode steps. Sequence B runs in the
  // same calls (3 prompt tokens, then decode) to check the batching.
  const int64_t Hq = 2, Hkv = 1, D = 8, P = 2;
  const float scale = 0.3f;
  PagedSetup setup(16, P, Hkv, D, 2, 6, 6);
  const auto qa = random_normal(size_t(9 * Hq * D), 7), ka = random_normal(size_t(9 * D), 8), va = random_normal(size_t(9 * D), 9);
  const auto qb = random_normal(size_t(6 * Hq * D), 10), kb = random_normal(size_t(6 * D), 11), vb = random_normal(size_t(6 * D), 12);
  std::vector<float> out_a(qa.size(), NAN), out_b(qb.size(), NAN);

  struct Step { int32_t a_start, a_len, b_start, b_len; };
  for (const Step& step : {Step{0, 4, 0, 3}, Step{4, 3, 3, 1}, Step{7, 1, 4, 1}, Step{8, 1, 5, 1}}) {
    const int64_t T = step.a_len + step.b_len;
    const int32_t cu_q[] = {0, step.a_len, int32_t(T)};
    const int32_t kv_lens[] = {step.a_start + step.a_len, step.b_start + step.b_len};
    AttentionBatch batch{cu_q, kv_lens, setup.page_table.data(), 6, 2, T, std::max(step.a_len, step.b_len), 9};
    std::vector<float> q, k, v;
    auto append = [&](const std::vector<float>& src, int64_t start, int64_t len, int64_t width, std::vector<float>& dst) {
      dst.insert(dst.end(), src.begin() + start * width, src.begin() + (start + len) * width);
    };
    append(qa, step.a_start, step.a_len, Hq * D, q);
    append(qb, step.b_start, step.b_len, Hq * D, q);
    append(ka, step.a_start, step.a_len, D, k);
    append(kb, step.b_start, step.b_len, D, k);
    append(va, step.a_start, step.a_len, D, v);
    append(vb, step.b_start, step.b_len, D, v);
    cpu::write_kv(k.data(), D, v.data(), D, batch, setup.cache);
    std::vector<float> out(size_t(T * Hq * D));
    cpu::attention({q.data(), nullptr, 0, 0, out.data(), Hq * D, Hq, scale}, batch, setup.cache);
    std::copy(out.begin(), out.begin() + step.a_len * Hq * D, out_a.begin() + step.a_start * Hq * D);
    std::copy(out.begin() + step.a_len * Hq * D, out.end(), out_b.begin() + step.b_start * Hq * D);
  }
  const auto expected_a = dense_attention(qa, ka, va, nullptr, 0, 9, 9, Hq, Hkv, D, scale);
  const auto expected_b = dense_attention(qb, kb, vb, nullptr, 0, 6, 6, Hq, Hkv, D, scale);
  for (size_t i = 0; i < out_a.size(); ++i) EXPECT_NEAR(out_a[i], expected_a[i], 1e-5) << i;
  for (size_t i = 0; i < out_b.size(); ++i) EXPECT_NEAR(out_b[i], expected_b[i], 1e-5) << i;
}

TEST(CpuAttention, FirstTokenReturnsItsValueTimesGate) {
  const int64_t D = 4;
  PagedSetup setup(2, 4, 1, D, 1, 1, 13);
  const std::vector<float> q = {1, 2, 3, 4}, k = {4, 3, 2, 1}, v = {1, -2, 3, -4}, gate = {0, 100, -100, 0};
  const int32_t cu_q[] = {0, 1}, kv_lens[] = {1};
  AttentionBatch batch{cu_q, kv_lens, setup.page_table.data(), 1, 1, 1, 1, 1};
  cpu::write_kv(k.data(), D, v.data(), D, batch, setup.cache);
  std::vector<float> out(4);
  cpu::attention({q.data(), gate.data(), D, D, out.data(), D, 1, 0.5f}, batch, setup.cache);
  EXPECT_NEAR(out[0], 0.5f, 1e-6);
  EXPECT_NEAR(out[1], -2.f, 1e-6);
  EXPECT_NEAR(out[2], 0.f, 1e-6);
  EXPECT_NEAR(out[3], -2.f, 1e-6);
}

TEST(CpuAttention, RejectsPageIndexOutsidePool) {
  PagedSetup setup(2, 4, 1, 4, 1, 1, 14);
  setup.page_table[0] = 5;
  const std::vector<float> x(4, 1.f);
  const int32_t cu_q[] = {0, 1}, kv_lens[] = {1};
  AttentionBatch batch{cu_q, kv_lens, setup.page_table.data(), 1, 1, 1, 1, 1};
  EXPECT_THROW(cpu::write_kv(x.data(), 4, x.data(), 4, batch, setup.cache), std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
