// GEMM throughput at the projection shapes of the published Qwen3.5 models (TP 1), T in {1, 8, 64,
// 1024, 8192}: BF16 as GemmRunner runs it (auto: cuBLASLt or, for T <= 64 where it timed faster,
// the skinny kernel) and, for T <= 64, cuBLASLt and the skinny kernel each forced; block-FP8 both
// ways side by side: cuBLASLt W8A8 (timed with its activation-quantization kernel, part of every
// call) and our W8A16 kernels (the skinny one for T <= 64, the 64×64 tile kernel above), and for
// T <= 64 our W8A8 skinny kernel (x quantized as for cuBLASLt, E4M3 wgmma; its quantize launch
// included).
// Prints TFLOP/s (BF16 also against the 790 TFLOP/s BF16 ceiling) and, since small-T GEMMs are
// weight-bound, GB/s against the card's copy bandwidth (measured at start), counting the bytes a
// GEMM must move (W, x in BF16, y).
// Times are per call with 20 calls queued back to back (bench::queued_us), weights rotating over
// copies larger than L2: the GPU time a call costs inside a forward pass, without launch latency.
// For T <= 64 the "read us" column is what reading the same weight bytes alone takes (16-byte
// loads, the same rotation and queueing, launched normally): the floor of a standalone
// weight-bound call; "read8 us" the same for the FP8 weight bytes. The skinny kernel can go below it by overlapping the
// previous call's tail (programmatic dependent launch). The last columns are the BF16 auto path and the path the FP8
// "auto" call took (under Fp8Numerics::kFastest), with, for cuBLASLt, the token count it ran (T padded up where
// cuBLASLt has no algorithm for T itself, e.g. T = 1: the w8a8 column then includes the scratch copy-out), and for
// T <= 64 what the autotunes measured per candidate (GemmRunner::last_autotune).
// "after norm" (T <= 64): in a forward pass these GEMMs follow a norm or SiLU-mul, which lets the
// GEMM launch early and stream its weights meanwhile (one block per SM leaves no room for that
// beside the previous GEMM's blocks). The column is a GEMM's marginal time there: an RMSNorm of x
// followed by the GEMM (BF16 auto; FP8 auto, its quantize launch included) on the normed x, queued,
// minus the RMSNorms alone.
// "graph" (T <= 64): the same 20 calls captured in a CUDA graph and replayed, per call: the BF16 and
// FP8 auto paths, and "norm+fp8 rows" the RMSNorm writing its output quantized (kernels::Fp8Rows) and
// the FP8 auto GEMM reading those rows, minus that RMSNorm alone — the decode step's sequence (the
// autotune times calls with rows apart, without the W8A8 skinny kernel's quantize launch: "fp8 rows").
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/norm.h"
#include "tests/gpu/gdn_bench_util.h"
#include "tests/gpu/kernels_bench_util.h"

using namespace ds::kernels;

// Reads n 16-byte words and keeps nothing (the compare is never true for these fills).
__global__ void read_only_kernel(const uint4* p, size_t n, unsigned* sink) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  unsigned acc = 0;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride);
    const uint4 c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ b.y ^ c.z ^ d.w;
  }
  for (; i < n; i += stride) acc ^= __ldcs(p + i).x;
  if (acc == 0x9e3779b9u) *sink = acc;
}

struct Projection {
  const char* model;
  const char* name;
  int64_t N, K;
};

// Usage: gemm_bench [T,T,...] [text]: only these token counts (default 1,8,64,1024,8192) and only
// the projections whose "model projection" contains text (e.g. "35B", "down").
int main(int argc, char** argv) {
  const std::vector<Projection> shapes = {
      {"9B", "gdn in_proj (fused)", 12352, 4096},
      {"9B", "q_proj", 8192, 4096},
      {"9B", "o_proj/out_proj", 4096, 4096},
      {"9B", "mlp gate_up", 24576, 4096},
      {"9B", "mlp down", 4096, 12288},
      {"9B", "lm_head", 248320, 4096},
      {"27B", "gdn in_proj (fused)", 16480, 5120},
      {"27B", "q_proj", 12288, 5120},
      {"27B", "mlp gate_up", 34816, 5120},
      {"27B", "mlp down", 5120, 17408},
      {"35B-A3B", "gdn in_proj (fused)", 12352, 2048},
      {"35B-A3B", "q_proj", 8192, 2048},
      {"35B-A3B", "expert gate_up", 1024, 2048},
      {"35B-A3B", "expert down", 2048, 512},
  };
  const std::vector<int64_t> token_counts =
      bench::token_counts("gemm_bench", argc > 1 ? argv[1] : nullptr, {1, 8, 64, 1024, 8192});
  const std::string only = argc > 2 ? argv[2] : "";
  if (int n = 0; cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("SKIPPED: no GPU\n");
    return 77;
  }
  cuda::GemmRunner runner;
  runner.set_fp8_numerics(cuda::Fp8Numerics::kFastest);  // every form timed, so each column runs its best tiling
  int sms = 0;
  bench::check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "SM count");
  unsigned* sink = bench::device_alloc<unsigned>(1);
  cudaStream_t stream;  // the graph columns' (capture needs a stream other than the legacy default)
  bench::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  std::printf(
      "%-8s %-20s %6s %6s %5s | %9s %8s %6s %8s %6s | %9s %9s %8s | %9s %8s %8s %6s | %9s %8s %8s %6s %8s | %9s %6s "
      "| %9s %6s %9s %6s | %9s %6s %9s %6s %9s %6s | %s\n",
      "model", "projection", "N", "K", "T", "bf16 us", "TFLOP/s", "%peak", "GB/s", "%copy", "cublas us", "skinny us",
      "read us", "w8a8 us", "TFLOP/s", "GB/s", "%copy", "w8a16 us", "TFLOP/s", "GB/s", "%copy", "read8 us", "w8a8k us",
      "%copy", "norm+bf16", "%copy", "norm+fp8", "%copy", "graph bf16", "%copy", "graph fp8", "%copy", "g norm+fp8r",
      "%copy", "bf16 auto | fp8 auto path");
  for (const Projection& p : shapes) {
    if ((std::string(p.model) + " " + p.name).find(only) == std::string::npos) continue;
    // Rotate weight copies so the working set exceeds the 50 MB L2.
    const size_t w_elems = size_t(p.N * p.K);
    const int copies = int(std::max<size_t>(1, (size_t(256) << 20) / (w_elems * 2) + 1));
    bf16* w = bench::device_alloc<bf16>(w_elems * size_t(copies));
    bench::fill_random_bf16(w, w_elems * size_t(copies), 0.02f, 1);
    uint8_t* w8 = bench::device_alloc<uint8_t>(w_elems * size_t(copies));
    bench::check(cudaMemset(w8, 0x30, w_elems * size_t(copies)), "fp8 fill");
    const size_t scale_elems = size_t((p.N + 127) / 128 * ((p.K + 127) / 128));
    float* scales = bench::device_alloc<float>(scale_elems);
    std::vector<float> ones(scale_elems, 0.01f);
    bench::check(cudaMemcpy(scales, ones.data(), scale_elems * 4, cudaMemcpyHostToDevice), "scales");
    for (int64_t T : token_counts) {
      if (p.N >= 200000 && T > 1024) continue;  // lm_head at 8192 tokens: 4 GB of logits, skipped
      bf16* x = bench::device_alloc<bf16>(size_t(T * p.K));
      bf16* y = bench::device_alloc<bf16>(size_t(T * p.N));
      bench::fill_random_bf16(x, size_t(T * p.K), 1.f, 2);
      const double flops = 2.0 * double(T) * double(p.N) * double(p.K);
      const double bf16_bytes = 2.0 * (double(w_elems) + double(T * p.K) + double(T * p.N));
      const double fp8_bytes = bf16_bytes - double(w_elems);
      auto time_bf16 = [&](cuda::Bf16Path path) {
        return bench::queued_us([&](int i) {
          runner.gemm(x, p.K, w + w_elems * size_t(i % copies), y, p.N, T, p.N, p.K, 0.f, nullptr, path);
        });
      };
      const double us = time_bf16(cuda::Bf16Path::kAuto);
      const bool bf16_skinny = runner.last_gemm_skinny();
      const std::string bf16_tuned = runner.last_autotune();
      const double us_cublaslt = T <= 64 ? time_bf16(cuda::Bf16Path::kCublasLt) : us;
      const double us_skinny = T <= 64 ? time_bf16(cuda::Bf16Path::kSkinny) : NAN;
      const auto time_read = [&](const void* weights, size_t bytes) {
        return T > 64 ? NAN : bench::queued_us([&](int i) {
          const auto* words =
              reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(weights) + bytes * size_t(i % copies));
          read_only_kernel<<<4 * sms, 512>>>(words, bytes / 16, sink);
        });
      };
      const double us_read = time_read(w, w_elems * 2), us_read8 = time_read(w8, w_elems);
      // FP8 "auto" first: the skinny kernel for T <= 64, else cuBLASLt where it can, else the tile kernel.
      runner.gemm_fp8(x, p.K, w8, scales, y, p.N, T, p.N, p.K, 0.f, nullptr);
      const cuda::Fp8Path auto_path = runner.last_fp8_path();
      const std::string fp8_tuned = runner.last_autotune();
      runner.gemm_fp8(x, p.K, w8, scales, y, p.N, T, p.N, p.K, 0.f, nullptr, cuda::Fp8Path::kCublasLt);
      const long t_pad = long(runner.last_fp8_padded_tokens());
      const double us_w8a8 = bench::queued_us([&](int i) {
        runner.gemm_fp8(x, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N, p.K, 0.f, nullptr,
                        cuda::Fp8Path::kCublasLt);
      });
      const double us_w8a16 = bench::queued_us([&](int i) {
        runner.gemm_fp8(x, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N, p.K, 0.f, nullptr,
                        cuda::Fp8Path::kKernel);
      });
      const double us_w8a8_skinny = T > 64 ? NAN : bench::queued_us([&](int i) {
        runner.gemm_fp8(x, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N, p.K, 0.f, nullptr,
                        cuda::Fp8Path::kSkinnyW8A8);
      });
      double after_norm_bf16 = NAN, after_norm_fp8 = NAN, graph_bf16 = NAN, graph_fp8 = NAN, graph_norm_fp8 = NAN;
      std::string fp8_rows_tuned;
      if (T <= 64) {
        bf16* xn = bench::device_alloc<bf16>(size_t(T * p.K));
        bf16* gamma = bench::device_alloc<bf16>(size_t(p.K));
        bench::fill_random_bf16(gamma, size_t(p.K), 0.2f, 3);
        const auto norm = [&] { cuda::rms_norm(x, p.K, gamma, xn, p.K, T, p.K, 1e-6f, nullptr); };
        const double us_norm = bench::queued_us([&](int) { norm(); });
        after_norm_bf16 = bench::queued_us([&](int i) {
          norm();
          runner.gemm(xn, p.K, w + w_elems * size_t(i % copies), y, p.N, T, p.N, p.K, 0.f, nullptr);
        }) - us_norm;
        after_norm_fp8 = bench::queued_us([&](int i) {
          norm();
          runner.gemm_fp8(xn, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N, p.K, 0.f, nullptr);
        }) - us_norm;
        // The graph columns: the same calls on `stream`, captured once and replayed.
        graph_bf16 = gpu_bench::graph_us(
            [&](int i) { runner.gemm(x, p.K, w + w_elems * size_t(i % copies), y, p.N, T, p.N, p.K, 0.f, stream); },
            stream);
        graph_fp8 = gpu_bench::graph_us(
            [&](int i) {
              runner.gemm_fp8(x, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N, p.K, 0.f, stream);
            },
            stream);
        if (p.K % 128 == 0) {
          const Fp8Rows rows{bench::device_alloc<uint8_t>(size_t(T * p.K)),
                             bench::device_alloc<float>(size_t(T * p.K / 128))};
          const auto norm_rows = [&] { cuda::rms_norm(x, p.K, gamma, xn, p.K, T, p.K, 1e-6f, stream, &rows); };
          // Calls with rows are timed apart (as a decode step's first, eager run times them).
          norm_rows();
          runner.gemm_fp8(xn, p.K, w8, scales, y, p.N, T, p.N, p.K, 0.f, stream, cuda::Fp8Path::kAuto, &rows);
          bench::check(cudaStreamSynchronize(stream), "rows autotune");
          fp8_rows_tuned = runner.last_autotune();
          const double graph_norm = gpu_bench::graph_us([&](int) { norm_rows(); }, stream);
          graph_norm_fp8 = gpu_bench::graph_us(
                               [&](int i) {
                                 norm_rows();
                                 runner.gemm_fp8(xn, p.K, w8 + w_elems * size_t(i % copies), scales, y, p.N, T, p.N,
                                                 p.K, 0.f, stream, cuda::Fp8Path::kAuto, &rows);
                               },
                               stream) -
                           graph_norm;
          cudaFree(rows.codes);
          cudaFree(rows.scales);
        }
        cudaFree(xn);
        cudaFree(gamma);
      }
      auto tflops = [&](double t_us) { return flops / t_us * 1e-6; };
      auto gbs = [&](double bytes, double t_us) { return bytes / t_us * 1e-3; };
      std::printf(
          "%-8s %-20s %6ld %6ld %5ld | %9.1f %8.1f %5.1f%% %8.0f %5.1f%% | %9.1f %9.1f %8.1f | %9.1f %8.1f %8.0f "
          "%5.1f%% | %9.1f "
          "%8.1f %8.0f %5.1f%% %8.1f | %9.1f %5.1f%% | %9.1f %5.1f%% %9.1f %5.1f%% | %9.1f %5.1f%% %9.1f %5.1f%% %9.1f "
          "%5.1f%% | %s | %s%s%s\n",
          p.model, p.name, long(p.N), long(p.K), long(T), us, tflops(us), tflops(us) / bench::kPeakBf16TflopS * 100,
          gbs(bf16_bytes, us), gbs(bf16_bytes, us) / bench::copy_gbs() * 100, us_cublaslt, us_skinny, us_read, us_w8a8,
          tflops(us_w8a8), gbs(fp8_bytes, us_w8a8), gbs(fp8_bytes, us_w8a8) / bench::copy_gbs() * 100, us_w8a16,
          tflops(us_w8a16), gbs(fp8_bytes, us_w8a16), gbs(fp8_bytes, us_w8a16) / bench::copy_gbs() * 100, us_read8,
          us_w8a8_skinny, gbs(fp8_bytes, us_w8a8_skinny) / bench::copy_gbs() * 100, after_norm_bf16,
          gbs(bf16_bytes, after_norm_bf16) / bench::copy_gbs() * 100, after_norm_fp8,
          gbs(fp8_bytes, after_norm_fp8) / bench::copy_gbs() * 100, graph_bf16,
          gbs(bf16_bytes, graph_bf16) / bench::copy_gbs() * 100, graph_fp8,
          gbs(fp8_bytes, graph_fp8) / bench::copy_gbs() * 100, graph_norm_fp8,
          gbs(fp8_bytes, graph_norm_fp8) / bench::copy_gbs() * 100, bf16_skinny ? "skinny" : "cublaslt",
          cuda::to_string(auto_path), t_pad != T ? (" (w8a8 T_pad=" + std::to_string(t_pad) + ")").c_str() : "",
          T <= 64
              ? (" | autotune bf16: " + bf16_tuned + "; fp8: " + fp8_tuned + "; fp8 rows: " + fp8_rows_tuned).c_str()
              : "");
      cudaFree(x);
      cudaFree(y);
    }
    cudaFree(w);
    cudaFree(w8);
    cudaFree(scales);
  }
  cudaFree(sink);
  return 0;
}
