// Paged attention at Qwen3.5-9B's full-attention geometry (Hq 16, Hkv 4, head_dim 256, page 64):
//   decode: batch × context in {1k, 4k, 16k, 32k}, GB/s against the KV-read floor (every cached
//           key and value read once) and the card's copy ceiling (measured at start);
//   prefill: causal prompts, TFLOP/s (4·Hq·D per visible (query, key) pair) against 790.
// Usage: attention_bench [decode|prefill] (default both; one alone for profiling its kernels).
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "tests/gpu/kernels_bench_util.h"

using namespace ds::kernels;

namespace {

constexpr int64_t kHq = 16, kHkv = 4, kD = 256, kPage = 64;

struct Setup {
  std::vector<int32_t> cu_q, kv_lens, pages;
  int64_t max_pages = 0, tokens = 0, max_q = 0, max_kv = 0;
};

// Sequences of (new tokens, total length), pages laid out sequentially per sequence.
Setup make(const std::vector<std::pair<int64_t, int64_t>>& seqs) {
  Setup s;
  s.cu_q.push_back(0);
  for (auto [q, kv] : seqs) {
    s.cu_q.push_back(int32_t(s.cu_q.back() + q));
    s.kv_lens.push_back(int32_t(kv));
    s.max_q = std::max(s.max_q, q);
    s.max_kv = std::max(s.max_kv, kv);
  }
  s.tokens = s.cu_q.back();
  s.max_pages = (s.max_kv + kPage - 1) / kPage;
  s.pages.resize(size_t(int64_t(seqs.size()) * s.max_pages));
  std::iota(s.pages.begin(), s.pages.end(), 0);
  return s;
}

template <typename T>
T* upload(const std::vector<T>& v) {
  T* d = bench::device_alloc<T>(v.size());
  bench::check(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

double run(const Setup& s, void* workspace, size_t ws_bytes) {
  const int64_t num_pages = int64_t(s.pages.size());
  const size_t cache_elems = size_t(num_pages * kPage * kHkv * kD);
  bf16* k = bench::device_alloc<bf16>(cache_elems);
  bf16* v = bench::device_alloc<bf16>(cache_elems);
  bench::fill_random_bf16(k, cache_elems, 1.f, 1);
  bench::fill_random_bf16(v, cache_elems, 1.f, 2);
  bf16* q = bench::device_alloc<bf16>(size_t(s.tokens * kHq * kD));
  bf16* out = bench::device_alloc<bf16>(size_t(s.tokens * kHq * kD));
  bench::fill_random_bf16(q, size_t(s.tokens * kHq * kD), 1.f, 3);
  int32_t *cu = upload(s.cu_q), *kv = upload(s.kv_lens), *pt = upload(s.pages);
  const AttentionBatch batch{cu, kv, pt, s.max_pages, int64_t(s.kv_lens.size()), s.tokens, s.max_q, s.max_kv};
  const PagedKvCache<bf16> cache{k, v, num_pages, kPage, kHkv, kD};
  const AttentionIo<bf16> io{q, nullptr, 0, 0, out, kHq * kD, kHq, 1.f / 16.f};
  const double us = bench::median_us([&](int) { cuda::attention(io, batch, cache, workspace, ws_bytes, nullptr); });
  for (void* p : {static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(q), static_cast<void*>(out),
                  static_cast<void*>(cu), static_cast<void*>(kv), static_cast<void*>(pt)}) {
    cudaFree(p);
  }
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (!only.empty() && only != "decode" && only != "prefill") {
    std::fprintf(stderr, "usage: attention_bench [decode|prefill]\n");
    return 2;
  }
  const size_t ws_bytes = cuda::attention_workspace_bytes(64, kHq, kD);
  void* workspace = bench::device_alloc<char>(ws_bytes);
  std::printf("decode (Hq %ld, Hkv %ld, D %ld, page %ld)\n%6s %7s | %9s %9s %6s\n", long(kHq), long(kHkv), long(kD),
              long(kPage), "batch", "context", "us", "GB/s", "%copy");
  for (int64_t batch : {1, 8, 32, 64}) {
    if (only == "prefill") break;
    for (int64_t ctx : {1024, 4096, 16384, 32768}) {
      if (batch * ctx > 64 * 16384) continue;  // keep the cache under ~9 GB
      const Setup s = make(std::vector<std::pair<int64_t, int64_t>>(size_t(batch), {1, ctx}));
      const double us = run(s, workspace, ws_bytes);
      const double bytes = double(batch * ctx) * kHkv * kD * 2 * 2;
      std::printf("%6ld %7ld | %9.1f %9.0f %5.1f%%\n", long(batch), long(ctx), us, bytes / us * 1e-3,
                  bytes / us * 1e-3 / bench::copy_gbs() * 100);
    }
  }
  std::printf("prefill (causal, no cached prefix)\n%6s %7s | %9s %9s %6s\n", "seqs", "length", "us", "TFLOP/s", "%peak");
  for (auto [seqs, len] : {std::pair<int64_t, int64_t>{1, 4096}, {8, 1024}, {1, 16384}, {4, 8192}}) {
    if (only == "decode") break;
    const Setup s = make(std::vector<std::pair<int64_t, int64_t>>(size_t(seqs), {len, len}));
    const double us = run(s, workspace, ws_bytes);
    const double pairs = double(seqs) * double(len) * double(len + 1) / 2;
    const double flops = 4.0 * kHq * kD * pairs;
    std::printf("%6ld %7ld | %9.1f %9.1f %5.1f%%\n", long(seqs), long(len), us, flops / us * 1e-6,
                flops / us * 1e-6 / bench::kPeakBf16TflopS * 100);
  }
  cudaFree(workspace);
  return 0;
}
