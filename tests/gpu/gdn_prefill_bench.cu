// Gated-delta-rule prefill of one long prompt (4k, 16k, 64k tokens) at the GPU.md shapes:
// chunked v3 (BF16 tensor cores) against the per-token recurrence v1, as time, tokens/s and
// TFLOP/s (nominal chunked-algorithm FLOPs), next to FLA's figures from GPU.md. The same 64k
// tokens as 64 prompts of 1k: a batched prefill.
// Usage: gdn_prefill_bench [--no-recurrent]   (the recurrent baseline at 64k takes a while)
//        gdn_prefill_bench --profile         (only the 64k-token Hk16 Hv32 prompt, for ncu)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/gated_delta_rule.h"
#include "tests/gpu/gdn_bench_util.h"

namespace {

using ds::kernels::bf16;
using ds::kernels::GdnDims;
using ds::kernels::gpu_bench::check;
using ds::kernels::gpu_bench::free_all;
using ds::kernels::gpu_bench::gpu_name_or_skip;
using ds::kernels::gpu_bench::median_us;

// FLOPs of the chunked algorithm per token and value head (chunk L = 64, d = 128): k̂k̂ᵀ, q̂k̂ᵀ,
// W_k, W_v (2·2·L·d each per token), U, Q_γMᵀ, state update (2·d² each), P·U (2·L·d).
double chunked_flops(int64_t T, const GdnDims& d) {
  const double L = 64, dk = double(d.head_k_dim), dv = double(d.head_v_dim);
  const double per_token = 2 * L * dk * 2 + 2 * L * dk + 2 * L * dv + 3 * 2 * dk * dv + 2 * L * dv;
  return per_token * double(T) * double(d.num_v_heads);
}

void bench(const char* name, const GdnDims& d, int64_t T, double fla_ms, bool with_recurrent, cudaStream_t stream,
           int32_t num_seqs = 1) {
  const int64_t C = d.conv_dim(), K = d.key_dim();
  bf16* qkv = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(T * C * sizeof(bf16), 1));
  std::vector<float> gates(2 * T * d.num_v_heads);
  for (int64_t i = 0; i < T * d.num_v_heads; ++i) {
    gates[i] = -0.01f - 0.2f * float(i % 7) / 7.f;                    // g
    gates[T * d.num_v_heads + i] = 0.1f + 0.8f * float(i % 5) / 5.f;  // beta
  }
  float* d_gates = nullptr;
  check(cudaMalloc(&d_gates, gates.size() * sizeof(float)), "cudaMalloc");
  check(cudaMemcpy(d_gates, gates.data(), gates.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  const float* g = d_gates;
  const float* beta = d_gates + T * d.num_v_heads;
  float* state =
      static_cast<float*>(ds::kernels::gpu_bench::device_random(num_seqs * d.state_floats() * sizeof(float), 2));
  bf16* out = nullptr;
  check(cudaMalloc(&out, T * d.value_dim() * sizeof(bf16)), "cudaMalloc");
  // cu_seqlens (equal lengths), then slots 0..num_seqs-1; every sequence continues from its slot.
  std::vector<int32_t> host_batch(2 * num_seqs + 1);
  for (int32_t s = 0; s <= num_seqs; ++s) host_batch[s] = int32_t(T * s / num_seqs);
  for (int32_t s = 0; s < num_seqs; ++s) host_batch[num_seqs + 1 + s] = s;
  int32_t* d_batch = nullptr;
  check(cudaMalloc(&d_batch, sizeof(int32_t) * host_batch.size()), "cudaMalloc");
  check(cudaMemcpy(d_batch, host_batch.data(), sizeof(int32_t) * host_batch.size(), cudaMemcpyHostToDevice),
        "cudaMemcpy");
  const ds::kernels::GdnVarlenBatch batch{d_batch, d_batch + num_seqs + 1, nullptr, num_seqs, T, T / num_seqs};
  const size_t ws_bytes = ds::kernels::cuda::gated_delta_rule_prefill_workspace_bytes(T, num_seqs, d);
  void* ws = nullptr;
  check(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace");

  const double t_chunked = median_us(
      [&](int) {
        ds::kernels::cuda::gated_delta_rule_prefill_chunked(qkv, qkv + K, qkv + 2 * K, C, g, beta, state, batch, d, ws,
                                                            ws_bytes, out, stream);
      },
      stream, 2, 10);
  const double flops = chunked_flops(T, d);
  std::printf("%-22s T=%-6ld x%-4d | chunked %8.3f ms %6.1f M tok/s %5.1f TFLOP/s", name, long(T), num_seqs,
              t_chunked * 1e-3, double(T) / t_chunked, flops / t_chunked * 1e-6);
  if (with_recurrent) {
    const double t_rec = median_us(
        [&](int) {
          ds::kernels::cuda::gated_delta_rule_prefill_recurrent(qkv, qkv + K, qkv + 2 * K, C, g, beta, state, batch, d,
                                                                out, stream);
        },
        stream, 1, 3);
    std::printf(" | recurrent %8.3f ms %6.2f M tok/s | chunked speed-up %5.1fx", t_rec * 1e-3, double(T) / t_rec,
                t_rec / t_chunked);
  }
  if (fla_ms > 0) std::printf(" | FLA (GPU.md) %.2f ms %.1f M tok/s", fla_ms, double(T) / (fla_ms * 1e3));
  std::printf(" | workspace %.0f MB\n", double(ws_bytes) / (1 << 20));
  free_all({static_cast<void*>(qkv), static_cast<void*>(d_gates), static_cast<void*>(state), static_cast<void*>(out),
            static_cast<void*>(d_batch), ws});
}

}  // namespace

int main(int argc, char** argv) {
  const bool with_recurrent = !(argc > 1 && std::strcmp(argv[1], "--no-recurrent") == 0);
  const bool profile = argc > 1 && std::strcmp(argv[1], "--profile") == 0;
  const std::string gpu = gpu_name_or_skip();
  std::printf("gdn_prefill_bench on %s (T tokens x sequences, dk = dv = 128, BF16 tensor cores)\n", gpu.c_str());
  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "stream");
  const GdnDims tp1{16, 32, 128, 128}, tp2{8, 16, 128, 128}, r3{16, 48, 128, 128};
  if (profile) {
    bench("Hk16 Hv32", tp1, 65536, 4.75, false, stream);
    return 0;
  }
  // Short prompts: where the per-token recurrence could beat the chunked form's fixed cost.
  for (int64_t T : {16, 32, 64, 256}) bench("Hk16 Hv32", tp1, T, 0, with_recurrent, stream);
  bench("Hk16 Hv32", tp1, 4096, 0, with_recurrent, stream);
  bench("Hk16 Hv32", tp1, 16384, 1.15, with_recurrent, stream);
  bench("Hk16 Hv32", tp1, 65536, 4.75, with_recurrent, stream);
  bench("Hk8 Hv16 (TP2)", tp2, 65536, 2.94, with_recurrent, stream);
  bench("Hk16 Hv48 (27B)", r3, 65536, 6.81, with_recurrent, stream);
  bench("Hk16 Hv32", tp1, 65536, 0, false, stream, 64);
  return 0;
}
