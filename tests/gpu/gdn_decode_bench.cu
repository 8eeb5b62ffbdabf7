// GDN decode at batch 1..256: the gated-delta-rule decode kernel alone and the fused decode path
// (conv + gating + L2 norm + recurrence + gated RMSNorm, 2 launches), as µs and GB/s of state
// traffic against the floor (fp32 state read once and written once, plus q, k, v) at the card's
// copy bandwidth (measured at start).
// Each run uses a different set of slots of a pool larger than L2.
// Usage: gdn_decode_bench
#include <cuda_runtime.h>

#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/gated_delta_rule.h"
#include "kernels/gdn_decode.h"
#include "tests/gpu/gdn_bench_util.h"

namespace {

using ds::kernels::bf16;
using ds::kernels::GdnDims;
using ds::kernels::gpu_bench::check;
using ds::kernels::gpu_bench::free_all;
using ds::kernels::gpu_bench::gpu_name_or_skip;
using ds::kernels::gpu_bench::copy_gbs;
using ds::kernels::gpu_bench::median_us;

void bench(const char* name, const GdnDims& d, int64_t B, double fla_us, cudaStream_t stream) {
  const size_t state_bytes_per_slot = size_t(d.state_floats()) * sizeof(float);
  const int64_t groups = ds::kernels::gpu_bench::rotation_copies(B * state_bytes_per_slot);
  const int64_t num_slots = groups * B;
  float* state = static_cast<float*>(ds::kernels::gpu_bench::device_random(num_slots * state_bytes_per_slot, 3));
  float* conv_state =
      static_cast<float*>(ds::kernels::gpu_bench::device_random(num_slots * d.conv_state_floats() * 4, 4));
  const int64_t W = d.merged_width();
  bf16* proj = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(B * W * sizeof(bf16), 5));
  bf16* conv_w = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(d.conv_dim() * 4 * sizeof(bf16), 6));
  bf16* norm_w = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(d.head_v_dim * sizeof(bf16), 7));
  std::vector<float> gates(2 * B * d.num_v_heads + 2 * d.num_v_heads);
  for (size_t i = 0; i < gates.size(); ++i) gates[i] = (i % 2 == 0) ? -0.05f : 0.5f;
  float* d_gates = nullptr;
  check(cudaMalloc(&d_gates, gates.size() * sizeof(float)), "cudaMalloc");
  check(cudaMemcpy(d_gates, gates.data(), gates.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  float *g = d_gates, *beta = d_gates + B * d.num_v_heads, *A_log = beta + B * d.num_v_heads,
        *dt_bias = A_log + d.num_v_heads;
  std::vector<int32_t> slots(num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  int32_t* d_slots = nullptr;
  check(cudaMalloc(&d_slots, num_slots * sizeof(int32_t)), "cudaMalloc");
  check(cudaMemcpy(d_slots, slots.data(), num_slots * sizeof(int32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  bf16* out = nullptr;
  check(cudaMalloc(&out, B * d.value_dim() * sizeof(bf16)), "cudaMalloc");

  const bf16* qkv = proj;  // q|k|v as the first C columns of the merged row
  auto rule = [&](int i) {
    ds::kernels::cuda::gated_delta_rule_decode(qkv, qkv + d.key_dim(), qkv + 2 * d.key_dim(), W, g, beta, state,
                                               d_slots + (i % groups) * B, B, d, out, stream);
  };
  const double t_rule_event = median_us(rule, stream, 5, 50);
  const double t_rule = ds::kernels::gpu_bench::graph_us(rule, stream);
  const ds::kernels::GdnDecodeInputs<bf16> in{
      proj,   W,    proj + d.z_offset(), W, proj + d.b_offset(), W, proj + d.a_offset(), W, conv_w, A_log, dt_bias,
      norm_w, 1e-6f};
  auto fused = [&](int i) {
    ds::kernels::cuda::gdn_decode(in, {conv_state, state, d_slots + (i % groups) * B}, B, d, out, stream);
  };
  const double t_fused = ds::kernels::gpu_bench::graph_us(fused, stream);
  const double bytes = 2.0 * B * state_bytes_per_slot + double(B) * (d.conv_dim() + d.value_dim()) * sizeof(bf16);
  const double gbs = bytes / t_rule * 1e-3;
  std::printf("%-14s B=%-4ld | rule %7.1f us %6.0f GB/s (%3.0f%% of %.2f TB/s; floor %6.1f us)", name, long(B), t_rule,
              gbs, 100 * gbs / copy_gbs(), copy_gbs() / 1000, bytes / copy_gbs() * 1e-3);
  std::printf(" | fused decode %7.1f us | rule per-launch (events) %7.1f us", t_fused, t_rule_event);
  if (fla_us > 0) std::printf(" | FLA (GPU.md) %.0f us", fla_us);
  std::printf("\n");
  free_all({static_cast<void*>(state), static_cast<void*>(conv_state), static_cast<void*>(proj),
            static_cast<void*>(conv_w), static_cast<void*>(norm_w), static_cast<void*>(d_gates),
            static_cast<void*>(d_slots), static_cast<void*>(out)});
}

}  // namespace

int main() {
  const std::string gpu = gpu_name_or_skip();
  std::printf(
      "gdn_decode_bench on %s: per-call time inside a CUDA graph of 20 calls (median of 10 graph launches),\n"
      "and the rule kernel timed per launch with events (includes the launch gap)\n",
      gpu.c_str());
  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "stream");
  for (int64_t B : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    bench("Hk16 Hv32", {16, 32, 128, 128}, B, B == 64 ? 116 : B == 256 ? 442 : 0, stream);
  }
  for (int64_t B : {1, 8, 64, 256}) bench("Hk16 Hv48", {16, 48, 128, 128}, B, B == 256 ? 658 : 0, stream);
  for (int64_t B : {1, 8, 64, 256}) bench("Hk8 Hv16 TP2", {8, 16, 128, 128}, B, 0, stream);
  return 0;
}
