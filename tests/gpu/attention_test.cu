// Paged attention (KV write, chunked prefill/extend, decode with split-K, gate) against the fp32
// reference over the same paged layout. Each scenario runs two steps: the prompts' prefixes, then
// the new tokens (prefill, extend or decode), and finally compares the caches.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;
using testing_util::to_float;

struct Scenario {
  int64_t head_dim, num_q_heads, num_kv_heads, page_size;
  std::vector<int32_t> prefix_lens, new_lens;
  bool gate;
  bool check_prefix_attention;  // the CPU reference of long prefixes is slow: write them only
  bool workspace = true;
};

struct Step {
  std::vector<int32_t> cu_q, kv_lens;
  std::vector<int32_t> first;  // first position of each sequence's new tokens
  int64_t tokens = 0, max_q = 0, max_kv = 0;
};

Step make_step(const std::vector<int32_t>& start, const std::vector<int32_t>& len) {
  Step st;
  st.cu_q.push_back(0);
  for (size_t s = 0; s < len.size(); ++s) {
    st.cu_q.push_back(st.cu_q.back() + len[s]);
    st.kv_lens.push_back(start[s] + len[s]);
    st.first.push_back(start[s]);
    st.max_q = std::max<int64_t>(st.max_q, len[s]);
    st.max_kv = std::max<int64_t>(st.max_kv, start[s] + len[s]);
  }
  st.tokens = st.cu_q.back();
  return st;
}

void run_scenario(const Scenario& sc, uint32_t seed) {
  const int64_t D = sc.head_dim, Hq = sc.num_q_heads, Hkv = sc.num_kv_heads, P = sc.page_size;
  const int64_t S = int64_t(sc.new_lens.size());
  std::vector<int32_t> total(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) total[size_t(s)] = sc.prefix_lens[size_t(s)] + sc.new_lens[size_t(s)];
  const int64_t pages_per_seq = (*std::max_element(total.begin(), total.end()) + P - 1) / P;
  const int64_t num_pages = S * pages_per_seq + 5;
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(seed));
  const std::vector<int32_t> page_table(pages.begin(), pages.begin() + S * pages_per_seq);

  const size_t cache_elems = size_t(num_pages * P * Hkv * D);
  std::vector<float> cpu_k(cache_elems, NAN), cpu_v(cache_elems, NAN);
  PagedKvCache<float> cpu_cache{cpu_k.data(), cpu_v.data(), num_pages, P, Hkv, D};
  DeviceBuffer<bf16> gpu_k(cache_elems), gpu_v(cache_elems);
  PagedKvCache<bf16> gpu_cache{gpu_k.get(), gpu_v.get(), num_pages, P, Hkv, D};
  DeviceBuffer<int32_t> d_pages(page_table);
  const size_t ws_bytes = sc.workspace ? cuda::attention_workspace_bytes(64, Hq, D) : 0;
  DeviceBuffer<char> workspace(ws_bytes);
  const float scale = 1.f / std::sqrt(float(D));

  const std::vector<int32_t> zeros(size_t(S), 0);
  const Step steps[2] = {make_step(zeros, sc.prefix_lens), make_step(sc.prefix_lens, sc.new_lens)};
  for (int phase = 0; phase < 2; ++phase) {
    const Step& st = steps[phase];
    if (st.tokens == 0) continue;
    SCOPED_TRACE(phase == 0 ? "prefix step" : "new-token step");
    const int64_t T = st.tokens;
    // K/V rows with a padded stride (views), q dense, gate as the interleaved q_proj view.
    const int64_t ldk = Hkv * D + 8;
    const auto k = random_bf16(size_t(T * ldk), seed + 10 * phase + 1), v = random_bf16(size_t(T * ldk), seed + 10 * phase + 2);
    const auto q = random_bf16(size_t(T * Hq * D), seed + 10 * phase + 3);
    const auto qg = random_bf16(size_t(T * Hq * 2 * D), seed + 10 * phase + 4, 2.f);
    AttentionBatch cpu_batch{st.cu_q.data(), st.kv_lens.data(), page_table.data(), pages_per_seq, S, T, st.max_q, st.max_kv};
    cpu::write_kv(k.values.data(), ldk, v.values.data(), ldk, cpu_batch, cpu_cache);

    DeviceBuffer<int32_t> d_cu(st.cu_q), d_kv(st.kv_lens);
    DeviceBuffer<bf16> dk(k.bits), dv(v.bits), dq(q.bits), dqg(qg.bits), dout(size_t(T * Hq * D));
    AttentionBatch gpu_batch{d_cu.get(), d_kv.get(), d_pages.get(), pages_per_seq, S, T, st.max_q, st.max_kv};
    cuda::write_kv(dk.get(), ldk, dv.get(), ldk, gpu_batch, gpu_cache, nullptr);
    ASSERT_CUDA(cudaGetLastError());
    if (phase == 0 && !sc.check_prefix_attention) continue;

    AttentionIo<bf16> gpu_io{dq.get(), sc.gate ? dqg.get() + D : nullptr, Hq * 2 * D, 2 * D, dout.get(), Hq * D, Hq, scale};
    cuda::attention(gpu_io, gpu_batch, gpu_cache, workspace.get(), ws_bytes, nullptr);
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<float> want(size_t(T * Hq * D), NAN);
    AttentionIo<float> cpu_io{q.values.data(), sc.gate ? qg.values.data() + D : nullptr, Hq * 2 * D, 2 * D, want.data(),
                              Hq * D, Hq, scale};
    cpu::attention(cpu_io, cpu_batch, cpu_cache);
    EXPECT_TRUE(all_close(to_float(dout.download()), want, 2e-2f, 2e-2f));
  }

  // Every written slot of the GPU cache equals the reference (exact: a copy of bf16 values).
  const auto gk = to_float(gpu_k.download()), gv = to_float(gpu_v.download());
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = 0; j < total[size_t(s)]; ++j) {
      const int64_t page = page_table[size_t(s * pages_per_seq + j / P)];
      for (int64_t h = 0; h < Hkv; ++h) {
        const size_t off = size_t(((page * Hkv + h) * P + j % P) * D);
        for (int64_t d = 0; d < D; ++d) {
          ASSERT_EQ(gk[off + size_t(d)], cpu_k[off + size_t(d)]) << "k seq " << s << " pos " << j;
          ASSERT_EQ(gv[off + size_t(d)], cpu_v[off + size_t(d)]) << "v seq " << s << " pos " << j;
        }
      }
    }
  }
}

TEST(GpuAttention, MixedPrefillExtendDecodeHeadDim256) {
  run_scenario({256, 8, 2, 16, {0, 37, 300}, {100, 1, 65}, true, true}, 1);
}

TEST(GpuAttention, HeadDim128NoGqaOddPageSize) {
  run_scenario({128, 4, 4, 7, {5, 0}, {200, 3}, false, true}, 2);
}

TEST(GpuAttention, GroupOfThreeStraddlesRowTiles) {
  run_scenario({128, 6, 2, 16, {10, 64}, {50, 23}, true, true}, 3);
}

TEST(GpuAttention, LongContextDecodeUsesSplitK) {
  run_scenario({256, 16, 2, 64, {999, 4095, 16}, {1, 1, 1}, true, false}, 4);
}

TEST(GpuAttention, LongContextDecodeWithoutWorkspace) {
  Scenario sc{256, 16, 2, 64, {999, 4095, 16}, {1, 1, 1}, true, false};
  sc.workspace = false;
  run_scenario(sc, 5);
}

TEST(GpuAttention, ShortBatchExtendUsesSplitK) {
  // 2 sequences × 4 new tokens: few blocks, so the key range is split while rows span 4 tokens.
  run_scenario({256, 8, 2, 32, {1500, 700}, {4, 4}, false, false}, 6);
}

}  // namespace
}  // namespace ds::kernels
