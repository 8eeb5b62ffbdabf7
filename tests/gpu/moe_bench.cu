// The MoE layer of Qwen3.5-35B-A3B (H 2048, 256 experts, top-8, expert and shared intermediate
// 512), BF16, TP 1, at T in {1, 64, 1024} (or the token counts given: moe_bench [T,T,...], at most
// 1024). Prints the layer time and the GB/s of the expert weights it has to read (distinct experts
// hit + shared expert + router), BF16 and block-FP8 experts; for T <= 64 also FP8 with x handed in
// quantized (as the norm before it writes it in the model: the shared expert's quantize launches
// skipped), timed alone and per call in a CUDA graph of 20 calls (as decode steps run).
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "tests/gpu/gdn_bench_util.h"
#include "tests/gpu/kernels_bench_util.h"

using namespace ds::kernels;

int main(int argc, char** argv) {
  const std::vector<int64_t> token_counts =
      bench::token_counts("moe_bench", argc > 1 ? argv[1] : nullptr, {1, 64, 1024}, 1024);
  const MoeDims dims{2048, 256, 8, 512, 512, true};
  const int64_t H = dims.hidden, E = dims.num_experts, Ie = dims.expert_intermediate, Is = dims.shared_intermediate;
  bf16* router = bench::device_alloc<bf16>(size_t(E * H));
  bf16* gate_up = bench::device_alloc<bf16>(size_t(E * 2 * Ie * H));
  bf16* down = bench::device_alloc<bf16>(size_t(E * H * Ie));
  bf16* s_gate_up = bench::device_alloc<bf16>(size_t(2 * Is * H));
  bf16* s_down = bench::device_alloc<bf16>(size_t(H * Is));
  bf16* s_gate = bench::device_alloc<bf16>(static_cast<size_t>(H));
  bench::fill_random_bf16(router, size_t(E * H), 0.05f, 1);
  bench::fill_random_bf16(gate_up, size_t(E * 2 * Ie * H), 0.02f, 2);
  bench::fill_random_bf16(down, size_t(E * H * Ie), 0.02f, 3);
  bench::fill_random_bf16(s_gate_up, size_t(2 * Is * H), 0.02f, 4);
  bench::fill_random_bf16(s_down, size_t(H * Is), 0.02f, 5);
  bench::fill_random_bf16(s_gate, size_t(H), 0.02f, 6);
  const MoeWeights<bf16> w{router, gate_up, down, s_gate_up, s_down, s_gate};
  // FP8 copies of the expert weights (constant values; routing depends on the BF16 router only).
  auto fp8 = [](size_t n) {
    uint8_t* p = bench::device_alloc<uint8_t>(n);
    bench::check(cudaMemset(p, 0x30, n), "fp8 fill");
    return p;
  };
  auto scales = [](size_t n) {
    float* p = bench::device_alloc<float>(n);
    std::vector<float> host(n, 0.01f);
    bench::check(cudaMemcpy(p, host.data(), n * 4, cudaMemcpyHostToDevice), "scales");
    return p;
  };
  const size_t gu_blocks = size_t(2 * Ie / 128 * (H / 128)), dn_blocks = size_t(H / 128 * (Ie / 128));
  const MoeFp8Weights w8{router, fp8(size_t(E * 2 * Ie * H)), scales(size_t(E) * gu_blocks), fp8(size_t(E * H * Ie)),
                         scales(size_t(E) * dn_blocks), fp8(size_t(2 * Is * H)), scales(gu_blocks), fp8(size_t(H * Is)),
                         scales(dn_blocks), s_gate};
  cuda::GemmRunner gemm;
  cuda::MoeRunner runner(dims, 1024);
  cudaStream_t stream;  // the graph column's (capture needs a stream other than the legacy default)
  bench::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  std::printf("%6s | %9s %12s %9s %6s | %9s %9s %6s | %11s %11s\n", "T", "bf16 us", "experts hit", "GB/s", "%copy",
              "fp8 us", "GB/s", "%copy", "fp8+rows us", "(in graph)");
  for (int64_t T : token_counts) {
    bf16* x = bench::device_alloc<bf16>(size_t(T * H));
    bf16* out = bench::device_alloc<bf16>(size_t(T * H));
    bench::fill_random_bf16(x, size_t(T * H), 1.f, 7);
    const double us = bench::median_us([&](int) { runner.forward(gemm, x, T, w, out, nullptr); });
    const double us8 = bench::median_us([&](int) { runner.forward(gemm, x, T, w8, out, nullptr); });
    double us8_rows = NAN, us8_rows_graph = NAN;
    if (T <= 64) {
      const Fp8Rows rows{bench::device_alloc<uint8_t>(size_t(T * H)), bench::device_alloc<float>(size_t(T * H / 128))};
      cuda::quantize_fp8_per_token_group(x, H, T, H, rows.codes, rows.scales, nullptr);
      us8_rows = bench::median_us([&](int) { runner.forward(gemm, x, T, w8, out, nullptr, &rows); });
      us8_rows_graph = gpu_bench::graph_us([&](int) { runner.forward(gemm, x, T, w8, out, stream, &rows); }, stream);
      cudaFree(rows.codes);
      cudaFree(rows.scales);
    }
    // Expected distinct experts for T tokens × 8 picks among 256 (uniform routing).
    const double hit = double(E) * (1.0 - std::pow(1.0 - double(dims.top_k) / double(E), double(T)));
    const double matrix_elems = hit * 3.0 * double(Ie * H) + 3.0 * double(Is * H);
    const double bytes = (matrix_elems + double(E * H)) * 2.0, bytes8 = matrix_elems + double(E * H) * 2.0;
    std::printf("%6ld | %9.1f %12.1f %9.0f %5.1f%% | %9.1f %9.0f %5.1f%% | %11.1f %11.1f\n", long(T), us, hit,
                bytes / us * 1e-3, bytes / us * 1e-3 / bench::copy_gbs() * 100, us8, bytes8 / us8 * 1e-3,
                bytes8 / us8 * 1e-3 / bench::copy_gbs() * 100, us8_rows, us8_rows_graph);
    cudaFree(x);
    cudaFree(out);
  }
  return 0;
}
