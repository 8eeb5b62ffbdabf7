// The GDN layer's memory-bound ops on their own, as µs in a CUDA graph and GB/s of their bytes
// (read once, written once) against the card's copy ceiling (measured at start): the causal conv over a
// prefill batch and its decode update, the gating, and the gated RMSNorm, all reading row-strided
// views of the merged projection output as the fused path does. Inputs rotate over sets larger
// than L2. Usage: gdn_ops_bench
#include <cuda_runtime.h>

#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/gated_norm.h"
#include "kernels/gdn_conv.h"
#include "kernels/gdn_gating.h"
#include "tests/gpu/gdn_bench_util.h"

namespace {

using ds::kernels::bf16;
using ds::kernels::GdnDims;
using ds::kernels::gpu_bench::copy_gbs;
using ds::kernels::gpu_bench::free_all;
using ds::kernels::gpu_bench::gpu_name_or_skip;
namespace bench_util = ds::kernels::gpu_bench;

void print(const char* op, const char* shape, const char* size, double us, double bytes) {
  const double gbs = bytes / us * 1e-3;
  std::printf("%-12s %-16s %-14s | %8.1f us %7.0f GB/s (%3.0f%% of %.2f TB/s; floor %7.1f us)\n", op, shape, size, us,
              gbs, 100 * gbs / copy_gbs(), copy_gbs() / 1000, bytes / copy_gbs() * 1e-3);
}

template <typename T>
T* device_buffer(size_t count, unsigned seed) {
  return static_cast<T*>(bench_util::device_random(count * sizeof(T), seed));
}

// A device copy of host int32 values.
int32_t* device_ints(const std::vector<int32_t>& v) {
  int32_t* p = nullptr;
  bench_util::check(cudaMalloc(&p, v.size() * sizeof(int32_t)), "cudaMalloc");
  bench_util::check(cudaMemcpy(p, v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Prefill-side ops over T tokens in `num_seqs` equal sequences: conv (+ SiLU, conv states in and
// out), gating, gated RMSNorm.
void bench_prefill_ops(const char* shape, const GdnDims& d, int64_t T, int32_t num_seqs, cudaStream_t stream) {
  const int64_t W = d.merged_width(), C = d.conv_dim(), Hv = d.num_v_heads;
  const int64_t copies = bench_util::rotation_copies(T * W * sizeof(bf16));
  bf16* proj = device_buffer<bf16>(copies * T * W, 1);
  bf16* conv_w = device_buffer<bf16>(C * 4, 2);
  float* conv_state = device_buffer<float>(num_seqs * d.conv_state_floats(), 3);
  bf16* conv_out = device_buffer<bf16>(T * C, 4);
  float* A_log = device_buffer<float>(Hv, 5);
  float* dt_bias = device_buffer<float>(Hv, 6);
  float* gates = device_buffer<float>(2 * T * Hv, 7);
  bf16* core = device_buffer<bf16>(T * d.value_dim(), 8);
  bf16* norm_w = device_buffer<bf16>(d.head_v_dim, 9);
  bf16* y = device_buffer<bf16>(T * d.value_dim(), 10);
  std::vector<int32_t> host(2 * num_seqs + 1);
  for (int32_t s = 0; s <= num_seqs; ++s) host[s] = int32_t(T * s / num_seqs);
  std::iota(host.begin() + num_seqs + 1, host.end(), 0);
  int32_t* batch_ints = device_ints(host);
  const ds::kernels::GdnVarlenBatch batch{batch_ints, batch_ints + num_seqs + 1, nullptr, num_seqs, T, T / num_seqs};
  auto rows = [&](int i) { return proj + (i % copies) * T * W; };
  char size[32];
  std::snprintf(size, sizeof(size), "T=%ld x%d", long(T), num_seqs);

  const double conv_us = bench_util::graph_us(
      [&](int i) { ds::kernels::cuda::gdn_conv_prefill(rows(i), W, conv_w, C, conv_state, batch, conv_out, stream); },
      stream);
  print("conv", shape, size, conv_us, 2.0 * T * C * sizeof(bf16));
  const double gating_us = bench_util::graph_us(
      [&](int i) {
        ds::kernels::cuda::gdn_gating(rows(i) + d.a_offset(), W, rows(i) + d.b_offset(), W, A_log, dt_bias, T, Hv,
                                      gates, gates + T * Hv, stream);
      },
      stream);
  print("gating", shape, size, gating_us, double(T) * Hv * (2 * sizeof(bf16) + 2 * sizeof(float)));
  const double norm_us = bench_util::graph_us(
      [&](int i) {
        ds::kernels::cuda::gated_rms_norm(core, rows(i) + d.z_offset(), W, norm_w, T, Hv, d.head_v_dim, 1e-6f, y,
                                          stream);
      },
      stream);
  print("gated norm", shape, size, norm_us, 3.0 * T * d.value_dim() * sizeof(bf16));
  for (void* p :
       {static_cast<void*>(proj), static_cast<void*>(conv_w), static_cast<void*>(conv_state),
        static_cast<void*>(conv_out), static_cast<void*>(A_log), static_cast<void*>(dt_bias), static_cast<void*>(gates),
        static_cast<void*>(core), static_cast<void*>(norm_w), static_cast<void*>(y), static_cast<void*>(batch_ints)}) {
    cudaFree(p);
  }
}

// The conv's one-token update for B sequences (fp32 conv state read and written, input and output).
void bench_conv_decode(const char* shape, const GdnDims& d, int64_t B, cudaStream_t stream) {
  const int64_t W = d.merged_width(), C = d.conv_dim();
  const size_t state_bytes = size_t(d.conv_state_floats()) * sizeof(float);
  const int64_t groups = bench_util::rotation_copies(B * state_bytes);
  bf16* proj = device_buffer<bf16>(B * W, 1);
  bf16* conv_w = device_buffer<bf16>(C * 4, 2);
  float* conv_state = device_buffer<float>(groups * B * d.conv_state_floats(), 3);
  bf16* out = device_buffer<bf16>(B * C, 4);
  std::vector<int32_t> slots(groups * B);
  std::iota(slots.begin(), slots.end(), 0);
  int32_t* d_slots = device_ints(slots);
  const double us = bench_util::graph_us(
      [&](int i) {
        ds::kernels::cuda::gdn_conv_decode(proj, W, conv_w, C, conv_state, d_slots + (i % groups) * B, B, out, stream);
      },
      stream);
  char size[32];
  std::snprintf(size, sizeof(size), "B=%ld", long(B));
  print("conv decode", shape, size, us, 2.0 * B * state_bytes + 2.0 * B * C * sizeof(bf16));
  free_all({static_cast<void*>(proj), static_cast<void*>(conv_w), static_cast<void*>(conv_state),
            static_cast<void*>(out), static_cast<void*>(d_slots)});
}

}  // namespace

int main() {
  const std::string gpu = gpu_name_or_skip();
  std::printf("gdn_ops_bench on %s: per-call time inside a CUDA graph of 20 calls (median of 10 launches)\n",
              gpu.c_str());
  cudaStream_t stream;
  bench_util::check(cudaStreamCreate(&stream), "stream");
  const GdnDims tp1{16, 32, 128, 128}, tp2{8, 16, 128, 128}, r3{16, 48, 128, 128};
  for (const auto& [name, d] :
       {std::pair{"Hk16 Hv32", tp1}, std::pair{"Hk8 Hv16 (TP2)", tp2}, std::pair{"Hk16 Hv48 (27B)", r3}}) {
    bench_prefill_ops(name, d, 4096, 1, stream);
    bench_prefill_ops(name, d, 16384, 1, stream);
    bench_prefill_ops(name, d, 16384, 64, stream);
    for (int64_t B : {1, 64, 256}) bench_conv_decode(name, d, B, stream);
  }
  return 0;
}
