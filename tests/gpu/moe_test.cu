// MoE router and the whole MoE block (BF16) against the fp32 reference.
#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/moe.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;
using testing_util::to_float;

// The device router against cpu::moe_route on random bf16-valued logits (no near-ties below 1e-2).
void expect_route_matches(int64_t T, int64_t E, int64_t k, bool norm_topk_prob, uint32_t seed) {
  const auto logits = random_bf16(size_t(T * E), seed, 2.f);
  DeviceBuffer<float> dl(logits.values), dw(size_t(T * k));
  DeviceBuffer<int32_t> di(size_t(T * k));
  cuda::moe_route(dl.get(), T, E, k, norm_topk_prob, di.get(), dw.get(), nullptr);
  std::vector<int32_t> ids(size_t(T * k));
  std::vector<float> w(size_t(T * k));
  cpu::moe_route(logits.values.data(), T, E, k, norm_topk_prob, ids.data(), w.data());
  EXPECT_EQ(di.download(), ids);
  EXPECT_TRUE(all_close(dw.download(), w, 1e-5f, 1e-4f));
}

TEST(GpuMoeRoute, MatchesReference) { expect_route_matches(100, 256, 8, true, 1); }

// The most experts and picks the kernel takes (a lane owns 32 logits; k = 32 rounds).
TEST(GpuMoeRoute, MatchesReferenceAtMostExpertsAndPicks) { expect_route_matches(20, 1024, 32, false, 3); }

// NaN logits (a broken router input) count as -inf: a row with a few still routes to its best finite
// experts, an all-NaN row to experts 0..k-1, and no token ever gets one expert twice (which would
// give that expert more rows than the batch has tokens).
TEST(GpuMoeRoute, NanLogitsStillGiveDistinctExperts) {
  const int64_t T = 40, E = 256, k = 8;
  auto logits = random_bf16(size_t(T * E), 3, 2.f).values;
  std::mt19937 rng(4);
  for (int64_t t = 0; t < T; ++t) {
    for (int i = 0; i < 3; ++i) logits[size_t(t * E + int64_t(rng() % E))] = NAN;
  }
  std::fill(logits.begin() + 5 * E, logits.begin() + 6 * E, NAN);  // token 5: every logit NaN
  DeviceBuffer<float> dl(logits), dw(size_t(T * k));
  DeviceBuffer<int32_t> di(size_t(T * k));
  cuda::moe_route(dl.get(), T, E, k, true, di.get(), dw.get(), nullptr);
  std::vector<int32_t> ids(size_t(T * k));
  std::vector<float> w(size_t(T * k));
  cpu::moe_route(logits.data(), T, E, k, true, ids.data(), w.data());
  const auto got_ids = di.download();
  EXPECT_EQ(got_ids, ids);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> row(got_ids.begin() + t * k, got_ids.begin() + (t + 1) * k);
    std::sort(row.begin(), row.end());
    EXPECT_EQ(std::adjacent_find(row.begin(), row.end()), row.end()) << "token " << t << " has an expert twice";
    EXPECT_GE(row.front(), 0);
    EXPECT_LT(row.back(), E);
  }
  auto finite_rows = [&](std::vector<float> v) {
    v.erase(v.begin() + 5 * k, v.begin() + 6 * k);
    return v;
  };
  EXPECT_TRUE(all_close(finite_rows(dw.download()), finite_rows(w), 1e-5f, 1e-4f));
}

// Random BF16 weights of one MoE block: exact fp32 images for the reference, BF16 on the device.
// The matrices that sum over H are scaled by sqrt(256 / H), so that their outputs keep the spread
// they have at H = 256 (and the SiLU its range) for any H.
struct Bf16MoeBlock {
  explicit Bf16MoeBlock(const MoeDims& d) : Bf16MoeBlock(d, std::sqrt(256.f / float(d.hidden))) {}
  MoeWeights<float> cpu() const {
    return {router.values.data(),    gate_up.values.data(), down.values.data(),
            s_gate_up.values.data(), s_down.values.data(),  s_gate.values.data()};
  }
  testing_util::Bf16Data router, gate_up, down, s_gate_up, s_down, s_gate;

 private:
  Bf16MoeBlock(const MoeDims& d, float over_h)
      : router(random_bf16(size_t(d.num_experts * d.hidden), 2, 0.1f * over_h)),
        gate_up(random_bf16(size_t(d.num_experts * 2 * d.expert_intermediate * d.hidden), 3, 0.06f * over_h)),
        down(random_bf16(size_t(d.num_experts * d.hidden * d.expert_intermediate), 4, 0.09f)),
        s_gate_up(random_bf16(size_t(2 * d.shared_intermediate * d.hidden), 5, 0.06f * over_h)),
        s_down(random_bf16(size_t(d.hidden * d.shared_intermediate), 6, 0.07f)),
        s_gate(random_bf16(size_t(d.hidden), 7, 0.1f * over_h)) {}
};

struct DeviceMoeBlock {
  explicit DeviceMoeBlock(const Bf16MoeBlock& b)
      : router(b.router.bits),
        gate_up(b.gate_up.bits),
        down(b.down.bits),
        s_gate_up(b.s_gate_up.bits),
        s_down(b.s_down.bits),
        s_gate(b.s_gate.bits) {}
  MoeWeights<bf16> weights() const {
    return {router.get(), gate_up.get(), down.get(), s_gate_up.get(), s_down.get(), s_gate.get()};
  }
  DeviceBuffer<bf16> router, gate_up, down, s_gate_up, s_down, s_gate;
};

// The block on T tokens of x against cpu::moe_forward.
void expect_block_matches(cuda::MoeRunner& runner, cuda::GemmRunner& gemm, const MoeDims& dims,
                          const Bf16MoeBlock& block, const DeviceMoeBlock& device, const testing_util::Bf16Data& x,
                          int64_t T) {
  DeviceBuffer<bf16> dx(x.bits), dout(size_t(T * dims.hidden));
  runner.forward(gemm, dx.get(), T, device.weights(), dout.get(), nullptr);
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> want(size_t(T * dims.hidden));
  cpu::moe_forward(x.values.data(), T, dims, block.cpu(), want.data());
  EXPECT_TRUE(all_close(to_float(dout.download()), want, 2e-2f, 2e-2f));
}

// Random weights of `dims` on each of `token_counts` tokens (a fresh x each) against the reference.
void expect_random_block_matches(const MoeDims& dims, const std::vector<int64_t>& token_counts, uint32_t x_seed) {
  const Bf16MoeBlock block(dims);
  const DeviceMoeBlock device(block);
  cuda::GemmRunner gemm;
  const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  cuda::MoeRunner runner(dims, max_tokens);
  for (int64_t T : token_counts) {
    SCOPED_TRACE("T=" + std::to_string(T));
    expect_block_matches(runner, gemm, dims, block, device, random_bf16(size_t(T * dims.hidden), uint32_t(x_seed + T)),
                         T);
  }
  EXPECT_THROW(runner.forward(gemm, nullptr, max_tokens + 1, device.weights(), nullptr, nullptr),
               std::invalid_argument);
}

// The shared expert on its own (intermediate 192) and as one more expert of the grouped GEMMs (128,
// the experts' size; for T <= 64, on its own above). T <= 64: the experts through the skinny kernel;
// above: the tile kernel.
TEST(GpuMoeRunner, WholeBlockMatchesReference) {
  for (const auto& [shared_intermediate, norm_topk_prob] : {std::pair{192, true}, {128, true}, {128, false}}) {
    SCOPED_TRACE("shared_intermediate=" + std::to_string(shared_intermediate) +
                 (norm_topk_prob ? "" : ", weights not renormalised"));
    expect_random_block_matches(MoeDims{256, 16, 4, 128, shared_intermediate, norm_topk_prob}, {1, 32, 37, 100}, 10);
  }
}

// Qwen3.5-35B-A3B's expert shapes (H 2048, Ie = Is = 512, top 8) with 16 experts in BF16: a token's 9
// slots take more 64-row blocks than an H100 has SMs (gate_up 144, down 288), so the grouped
// launches run two blocks per SM (T <= 8 with mma.sync, 16 to 64 with wgmma).
TEST(GpuMoeRunner, Bf16ExpertsAtPublishedShapesMatchReference) {
  expect_random_block_matches(MoeDims{2048, 16, 8, 512, 512, true}, {1, 8, 16, 32, 64}, 70);
}

// The published expert count (256, top 8) with every token's first choice the same expert: that
// expert gets as many rows as the batch has tokens (the most the grouped skinny launch takes at
// T = 32), the other slots few or none.
TEST(GpuMoeRunner, OneExpertTakingEveryTokenMatchesReference) {
  const MoeDims dims{256, 256, 8, 128, 128, true};
  Bf16MoeBlock block(dims);
  // x has mean 1, so this row's logit is ~0.04·H ≈ 10, a few units above the others' largest: first
  // for every token, while the other seven picks keep weights of a few percent that the comparison sees.
  const int64_t favourite = 200;
  for (int64_t h = 0; h < dims.hidden; ++h) {
    block.router.bits[size_t(favourite * dims.hidden + h)] = float_to_bf16(0.04f);
    block.router.values[size_t(favourite * dims.hidden + h)] = bf16_to_float(float_to_bf16(0.04f));
  }
  const DeviceMoeBlock device(block);
  cuda::GemmRunner gemm;
  cuda::MoeRunner runner(dims, 100);
  for (int64_t T : {1, 32, 100}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = random_bf16(size_t(T * dims.hidden), uint32_t(40 + T), 1.f, 1.f);
    std::vector<float> logits(size_t(T * dims.num_experts));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < dims.num_experts; ++e) {
        float dot = 0.f;
        for (int64_t h = 0; h < dims.hidden; ++h) {
          dot += x.values[size_t(t * dims.hidden + h)] * block.router.values[size_t(e * dims.hidden + h)];
        }
        logits[size_t(t * dims.num_experts + e)] = dot;
      }
    }
    std::vector<int32_t> ids(size_t(T * dims.top_k));
    std::vector<float> weights(ids.size());
    cpu::moe_route(logits.data(), T, dims.num_experts, dims.top_k, true, ids.data(), weights.data());
    double other_weight = 0;
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(ids[size_t(t * dims.top_k)], favourite) << "token " << t;
      other_weight += 1.0 - weights[size_t(t * dims.top_k)];
    }
    EXPECT_GT(other_weight / double(T), 0.02) << "the other picks must carry weight for the test to see them";
    expect_block_matches(runner, gemm, dims, block, device, x, T);
  }
}

// Block-FP8 experts and shared expert: the reference runs on the dequantized weights; with x also
// handed in quantized, the same output bits.
void expect_fp8_block_matches(const MoeDims& dims, const std::vector<int64_t>& token_counts) {
  const int64_t H = dims.hidden, E = dims.num_experts, Ie = dims.expert_intermediate, Is = dims.shared_intermediate;
  std::mt19937 rng(20);
  auto random_fp8 = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) {
      do b = uint8_t(rng());
      while ((b & 0x7f) == 0x7f || (b & 0x78) > 0x40);  // no NaN, |w| <= 4
    }
    return v;
  };
  auto random_scales = [&](size_t n) {
    std::vector<float> v(n);
    std::uniform_real_distribution<float> dist(0.01f, 0.03f);
    for (auto& x : v) x = dist(rng);
    return v;
  };
  auto blocks = [](int64_t n) { return (n + 127) / 128; };
  const auto gate_up = random_fp8(size_t(E * 2 * Ie * H)), down = random_fp8(size_t(E * H * Ie)),
             s_gate_up = random_fp8(size_t(2 * Is * H)), s_down = random_fp8(size_t(H * Is));
  const int64_t gu_scales = blocks(2 * Ie) * blocks(H), dn_scales = blocks(H) * blocks(Ie);
  const auto gate_up_scale = random_scales(size_t(E * gu_scales)), down_scale = random_scales(size_t(E * dn_scales)),
             s_gate_up_scale = random_scales(size_t(blocks(2 * Is) * blocks(H))),
             s_down_scale = random_scales(size_t(blocks(H) * blocks(Is)));
  const auto router = random_bf16(size_t(E * H), 21, 0.1f), s_gate = random_bf16(size_t(H), 22, 0.1f);

  std::vector<float> gate_up_f(gate_up.size()), down_f(down.size()), s_gate_up_f(s_gate_up.size()),
      s_down_f(s_down.size());
  for (int64_t e = 0; e < E; ++e) {
    cpu::dequantize_fp8_weight(gate_up.data() + e * 2 * Ie * H, gate_up_scale.data() + e * gu_scales, 2 * Ie, H,
                               gate_up_f.data() + e * 2 * Ie * H);
    cpu::dequantize_fp8_weight(down.data() + e * H * Ie, down_scale.data() + e * dn_scales, H, Ie,
                               down_f.data() + e * H * Ie);
  }
  cpu::dequantize_fp8_weight(s_gate_up.data(), s_gate_up_scale.data(), 2 * Is, H, s_gate_up_f.data());
  cpu::dequantize_fp8_weight(s_down.data(), s_down_scale.data(), H, Is, s_down_f.data());

  DeviceBuffer<uint8_t> d_gate_up(gate_up), d_down(down), d_s_gate_up(s_gate_up), d_s_down(s_down);
  DeviceBuffer<float> d_gu_scale(gate_up_scale), d_dn_scale(down_scale), d_sgu_scale(s_gate_up_scale),
      d_sdn_scale(s_down_scale);
  DeviceBuffer<bf16> d_router(router.bits), d_s_gate(s_gate.bits);
  const MoeFp8Weights gpu_w{d_router.get(),    d_gate_up.get(),   d_gu_scale.get(), d_down.get(),      d_dn_scale.get(),
                            d_s_gate_up.get(), d_sgu_scale.get(), d_s_down.get(),   d_sdn_scale.get(), d_s_gate.get()};
  const MoeWeights<float> cpu_w{router.values.data(), gate_up_f.data(), down_f.data(),
                                s_gate_up_f.data(),   s_down_f.data(),  s_gate.values.data()};
  cuda::GemmRunner gemm;
  cuda::MoeRunner runner(dims, 100);
  for (int64_t T : token_counts) {  // T <= 32: the FP8 experts through the skinny kernel; above: the tile kernel
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = random_bf16(size_t(T * H), uint32_t(30 + T));
    DeviceBuffer<bf16> dx(x.bits), dout(size_t(T * H));
    runner.forward(gemm, dx.get(), T, gpu_w, dout.get(), nullptr);
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<float> want(size_t(T * H));
    cpu::moe_forward(x.values.data(), T, dims, cpu_w, want.data());
    const auto out = dout.download();
    EXPECT_TRUE(all_close(to_float(out), want, 3e-2f, 2e-2f));
    if (T > 64) continue;
    // x handed in quantized (as the norm before writes it): the same bits, the shared expert's
    // quantize launches skipped.
    testing_util::DeviceFp8Rows rows(T, H);
    const Fp8Rows x_fp8 = rows.rows();
    cuda::quantize_fp8_per_token_group(dx.get(), H, T, H, x_fp8.codes, x_fp8.scales, nullptr);
    DeviceBuffer<bf16> dout_rows(size_t(T * H));
    runner.forward(gemm, dx.get(), T, gpu_w, dout_rows.get(), nullptr, &x_fp8);
    EXPECT_TRUE(all_close(to_float(dout_rows.download()), to_float(out), 0.f, 0.f));
  }
}

// The shared expert on its own (intermediate 256) and as one more expert (128, the experts' size;
// T <= 64); then Qwen3.5-35B-A3B's expert shapes (H 2048, Ie = Is = 512, top 8) with 16 experts, where a
// token's 9 slots of 64-row tiles take more blocks than an H100 has SMs, so the grouped launches run
// 128-row tiles (T <= 8), and where the tiles still outnumber the SMs (down at T = 1, both
// projections at T = 8, 16 and 32) two blocks per SM.
TEST(GpuMoeRunner, Fp8ExpertsMatchDequantizedReference) {
  for (int64_t shared_intermediate : {256, 128}) {
    SCOPED_TRACE("shared_intermediate=" + std::to_string(shared_intermediate));
    expect_fp8_block_matches(MoeDims{256, 8, 2, 128, shared_intermediate, true}, {1, 32, 100});
  }
  SCOPED_TRACE("35B-A3B expert shapes");
  expect_fp8_block_matches(MoeDims{2048, 16, 8, 512, 512, true}, {1, 8, 16, 32});
}

// The block captured in a CUDA graph (as decode steps run it) and replayed twice gives the bits of
// the direct call: the routing kernel's block count resets, the programmatic launches chain. T = 1
// (one routing block, grouped skinny GEMMs) and 37 (three routing blocks, gather and tile kernel),
// the shared expert as an expert.
TEST(GpuMoeRunner, GraphReplayEqualsDirectCall) {
  const MoeDims dims{256, 16, 4, 128, 128, true};
  const Bf16MoeBlock block(dims);
  const DeviceMoeBlock device(block);
  cuda::GemmRunner gemm;
  cuda::MoeRunner runner(dims, 64);
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int64_t T : {1, 37}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = random_bf16(size_t(T * dims.hidden), uint32_t(50 + T));
    DeviceBuffer<bf16> dx(x.bits), direct(size_t(T * dims.hidden)), replayed(size_t(T * dims.hidden));
    runner.forward(gemm, dx.get(), T, device.weights(), direct.get(), stream);  // also times the GEMM shapes
    runner.forward(gemm, dx.get(), T, device.weights(), direct.get(), stream);
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    runner.forward(gemm, dx.get(), T, device.weights(), replayed.get(), stream);
    ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      replayed.poison();
      ASSERT_CUDA(cudaDeviceSynchronize());  // the poison is on the legacy stream
      ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      ASSERT_CUDA(cudaStreamSynchronize(stream));
      EXPECT_EQ(to_float(replayed.download()), to_float(direct.download())) << "replay " << replay;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace ds::kernels
