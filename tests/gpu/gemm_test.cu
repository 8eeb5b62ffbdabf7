// cuBLASLt BF16 GEMM and the block-FP8 kernel against the OpenBLAS reference.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/gemm.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;

struct Shape {
  int64_t T, N, K, ldx, ldy;
};

TEST(GpuGemm, Bf16MatchesReferenceAcrossShapesAndViews) {
  cuda::GemmRunner runner;
  for (const Shape& s : {Shape{1, 256, 512, 512, 256}, Shape{7, 96, 136, 144, 100}, Shape{64, 512, 1024, 1024, 512},
                         Shape{300, 1000, 520, 520, 1024}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    const auto x = random_bf16(size_t(s.T * s.ldx), 1), w = random_bf16(size_t(s.N * s.K), 2, 0.05f);
    DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dy(size_t(s.T * s.ldy));
    runner.gemm(dx.get(), s.ldx, dw.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr);
    std::vector<float> want(size_t(s.T * s.ldy), NAN);
    cpu::gemm(x.values.data(), s.ldx, w.values.data(), want.data(), s.ldy, s.T, s.N, s.K);
    auto got = testing_util::to_float(dy.download());
    for (int64_t t = 0; t < s.T; ++t) {  // padding columns stay poisoned: compare the N columns only
      std::vector<float> g(got.begin() + t * s.ldy, got.begin() + t * s.ldy + s.N);
      std::vector<float> r(want.begin() + t * s.ldy, want.begin() + t * s.ldy + s.N);
      ASSERT_TRUE(all_close(g, r, 2e-2f, 1e-2f)) << "row " << t;
    }
  }
}

TEST(GpuGemm, Fp32OutputWithBetaAccumulates) {
  cuda::GemmRunner runner;
  const int64_t T = 33, N = 160, K = 256;
  const auto x = random_bf16(size_t(T * K), 3), w = random_bf16(size_t(N * K), 4, 0.05f);
  const auto y0 = random_bf16(size_t(T * N), 5);
  DeviceBuffer<bf16> dx(x.bits), dw(w.bits);
  DeviceBuffer<float> dy(y0.values);
  runner.gemm(dx.get(), K, dw.get(), dy.get(), N, T, N, K, 1.f, nullptr);
  std::vector<float> want = y0.values;
  cpu::gemm(x.values.data(), K, w.values.data(), want.data(), N, T, N, K, 1.f);
  EXPECT_TRUE(all_close(dy.download(), want, 1e-3f, 1e-3f));
  runner.gemm(dx.get(), K, dw.get(), dy.get(), N, T, N, K, 1.f, nullptr);
  EXPECT_EQ(runner.cached_plans(), 1u);  // the second call reused the plan
}

TEST(GpuGemm, Fp8BlockScaledMatchesDequantizedReference) {
  cuda::GemmRunner runner;
  std::mt19937 rng(6);
  for (const Shape& s : {Shape{5, 200, 328, 328, 200}, Shape{130, 384, 1024, 1032, 400}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    std::vector<uint8_t> w(size_t(s.N * s.K));
    for (auto& b : w) {
      do b = uint8_t(rng()); while ((b & 0x7f) == 0x7f);  // no NaN encodings
    }
    const int64_t sr = (s.N + 127) / 128, sc = (s.K + 127) / 128;
    std::vector<float> scales(size_t(sr * sc));
    std::uniform_real_distribution<float> scale_dist(1e-3f, 4e-3f);
    for (auto& v : scales) v = scale_dist(rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 7);
    const auto y0 = random_bf16(size_t(s.T * s.ldy), 8);
    DeviceBuffer<bf16> dx(x.bits), dy(y0.bits);
    DeviceBuffer<uint8_t> dw(w);
    DeviceBuffer<float> dscale(scales);
    runner.gemm_fp8(dx.get(), s.ldx, dw.get(), dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 1.f, nullptr);
    std::vector<float> want = y0.values;
    cpu::gemm_fp8(x.values.data(), s.ldx, w.data(), scales.data(), want.data(), s.ldy, s.T, s.N, s.K, 1.f);
    EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, 2e-2f, 1e-2f));
  }
}

TEST(GpuGemm, RejectsBadShape) {
  cuda::GemmRunner runner;
  EXPECT_THROW(runner.gemm(static_cast<const bf16*>(nullptr), 4, nullptr, static_cast<bf16*>(nullptr), 8, 1, 8, 8, 0.f,
                           nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
