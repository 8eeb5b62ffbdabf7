// cuBLASLt BF16 GEMM, the block-FP8 paths (cuBLASLt W8A8 with 1×128 activation quantization, our
// W8A16 kernels and W8A8 skinny kernel) and the activation quantization against the OpenBLAS / CPU
// references.
#include <cmath>
#include <cstdio>
#include <cstring>
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

// The N real columns of each of the T rows of a [T, ld] matrix.
std::vector<float> columns(const std::vector<float>& m, int64_t T, int64_t N, int64_t ld) {
  std::vector<float> out;
  for (int64_t t = 0; t < T; ++t) out.insert(out.end(), m.begin() + t * ld, m.begin() + t * ld + N);
  return out;
}

void expect_outside_unchanged(const std::vector<bf16>& got, const std::vector<bf16>& before, int64_t T, int64_t N,
                              int64_t ld) {
  size_t changed = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int64_t t = int64_t(i) / ld, n = int64_t(i) % ld;
    if (t >= T || n >= N) changed += got[i].bits != before[i].bits;
  }
  EXPECT_EQ(changed, 0u) << "elements outside the T x N result changed";
}

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

// The skinny kernel (T <= 64, W streamed once) against the OpenBLAS reference: one n8 token tile
// and several, N past the last whole 64-row tile, split-K over long K and a single split, views
// (ldx > K, ldy > N), BF16 and fp32 outputs. Outside y's T × N block nothing changes, and a second
// call gives the same bits (the split-K partials are added in a fixed order).
TEST(GpuGemm, SkinnyMatchesReferenceAndIsDeterministic) {
  cuda::GemmRunner runner;
  const Shape shapes[] = {{1, 256, 512, 512, 256},      {3, 200, 1024, 1032, 208},    {8, 4096, 4096, 4096, 4096},
                          {9, 96, 256, 256, 96},        {17, 1000, 2048, 2048, 1000}, {33, 512, 640, 640, 520},
                          {64, 4096, 4096, 4096, 4104}, {64, 24576, 256, 256, 24576}, {24, 1, 256, 256, 1},
                          {24, 8, 256, 256, 8},         {2, 8, 256, 256, 8}};  // MoE router, shared gate
  for (const Shape& s : shapes) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    const auto x = random_bf16(size_t(s.T * s.ldx), 21), w = random_bf16(size_t(s.N * s.K), 22, 0.05f);
    const int64_t rows = s.T + 2;  // rows past T (and columns past N) must stay poisoned
    DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dy(size_t(rows * s.ldy));
    DeviceBuffer<float> dy32(size_t(rows * s.ldy));
    const auto poison = dy.download();
    const auto poison32 = dy32.download();
    runner.gemm(dx.get(), s.ldx, dw.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr, cuda::Bf16Path::kSkinny);
    EXPECT_TRUE(runner.last_gemm_skinny());
    runner.gemm(dx.get(), s.ldx, dw.get(), dy32.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr, cuda::Bf16Path::kSkinny);
    std::vector<float> want(size_t(s.T * s.ldy));
    cpu::gemm(x.values.data(), s.ldx, w.values.data(), want.data(), s.ldy, s.T, s.N, s.K);
    want = columns(want, s.T, s.N, s.ldy);
    const auto got_bits = dy.download();
    expect_outside_unchanged(got_bits, poison, s.T, s.N, s.ldy);
    EXPECT_TRUE(all_close(columns(testing_util::to_float(got_bits), s.T, s.N, s.ldy), want, 2e-2f, 1e-2f));
    const auto got32 = dy32.download();
    size_t changed = 0;
    for (size_t i = 0; i < got32.size(); ++i) {
      const int64_t t = int64_t(i) / s.ldy, n = int64_t(i) % s.ldy;
      if (t >= s.T || n >= s.N) changed += std::memcmp(&got32[i], &poison32[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(changed, 0u) << "fp32 output: elements outside the T x N result changed";
    EXPECT_TRUE(all_close(columns(got32, s.T, s.N, s.ldy), want, 1e-3f, 1e-3f));
    runner.gemm(dx.get(), s.ldx, dw.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr, cuda::Bf16Path::kSkinny);
    const auto again = dy.download();
    EXPECT_EQ(std::memcmp(again.data(), got_bits.data(), again.size() * sizeof(bf16)), 0) << "not deterministic";
  }
}

TEST(GpuGemm, SkinnyRefusesWhatItCannotRun) {
  cuda::GemmRunner runner;
  DeviceBuffer<bf16> dx(size_t(65 * 512)), dw(size_t(256 * 512)), dy(size_t(65 * 256));
  const auto skinny = cuda::Bf16Path::kSkinny;
  EXPECT_THROW(runner.gemm(dx.get(), 512, dw.get(), dy.get(), 256, 65, 256, 512, 0.f, nullptr, skinny),
               std::invalid_argument);  // T > 64
  EXPECT_THROW(runner.gemm(dx.get(), 500, dw.get(), dy.get(), 256, 4, 256, 500, 0.f, nullptr, skinny),
               std::invalid_argument);  // K % 128 != 0
  EXPECT_THROW(runner.gemm(dx.get(), 512, dw.get(), dy.get(), 256, 4, 256, 512, 1.f, nullptr, skinny),
               std::invalid_argument);  // beta != 0
}

std::vector<uint8_t> random_fp8(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    do b = uint8_t(rng());
    while ((b & 0x7f) == 0x7f);  // every finite E4M3 value, no NaN
  }
  return v;
}

std::vector<float> random_scales(int64_t N, int64_t K, std::mt19937& rng) {
  std::vector<float> v(size_t((N + 127) / 128 * ((K + 127) / 128)));
  std::uniform_real_distribution<float> dist(1e-3f, 4e-3f);
  for (auto& s : v) s = dist(rng);
  return v;
}

// A random block-FP8 weight [N, K] with its 128×128 scales, on the host and the device.
struct Fp8Weight {
  Fp8Weight(int64_t N, int64_t K, std::mt19937& rng)
      : w(random_fp8(size_t(N * K), rng)), scales(random_scales(N, K, rng)), dw(w), dscale(scales) {}
  std::vector<uint8_t> w;
  std::vector<float> scales;
  DeviceBuffer<uint8_t> dw;
  DeviceBuffer<float> dscale;
};

TEST(GpuGemm, Fp8W8A16KernelMatchesDequantizedReference) {
  cuda::GemmRunner runner;
  std::mt19937 rng(6);
  for (const Shape& s : {Shape{5, 200, 328, 328, 200}, Shape{130, 384, 1024, 1032, 400}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    const Fp8Weight W(s.N, s.K, rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 7);
    const auto y0 = random_bf16(size_t(s.T * s.ldy), 8);
    DeviceBuffer<bf16> dx(x.bits), dy(y0.bits);
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 1.f, nullptr,
                    cuda::Fp8Path::kKernel);
    EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kKernel);
    std::vector<float> want = y0.values;
    cpu::gemm_fp8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K, 1.f);
    EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, 2e-2f, 1e-2f));
  }
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(v.size()));
}

double relative_rms_error(const std::vector<float>& got, const std::vector<float>& want) {
  double e = 0;
  for (size_t i = 0; i < got.size(); ++i) e += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
  return std::sqrt(e / double(got.size())) / rms(want);
}

bool is_hopper() {
  cudaDeviceProp prop{};
  return cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major == 9;
}

TEST(GpuGemm, Fp8ActivationQuantizationMatchesCpuBitForBit) {
  for (const Shape& s : {Shape{1, 0, 256, 256, 0}, Shape{7, 0, 512, 520, 0}, Shape{1000, 0, 4096, 4096, 0}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " K=" + std::to_string(s.K));
    auto x = random_bf16(size_t(s.T * s.ldx), 11);
    for (int64_t k = s.K - 128; k < s.K; ++k) x.bits[size_t((s.T - 1) * s.ldx + k)] = float_to_bf16(0.f);  // scale 1
    x.bits[0] = float_to_bf16(-300.f);  // an outlier sets its group's scale
    x.values = testing_util::to_float(x.bits);
    DeviceBuffer<bf16> dx(x.bits);
    DeviceBuffer<uint8_t> dq(size_t(s.T * s.K));  // poisoned: 0xff bytes, NaN scales
    DeviceBuffer<float> dscale(size_t(s.T * s.K / 128));
    cuda::quantize_fp8_per_token_group(dx.get(), s.ldx, s.T, s.K, dq.get(), dscale.get(), nullptr);
    std::vector<uint8_t> want_q(dq.size());
    std::vector<float> want_scale(dscale.size());
    cpu::quantize_fp8_per_token_group(x.values.data(), s.ldx, s.T, s.K, want_q.data(), want_scale.data());
    const auto got_q = dq.download();
    const auto got_scale = dscale.download();
    size_t bad_q = 0, bad_scale = 0;
    for (size_t i = 0; i < got_q.size(); ++i)
      bad_q += got_q[i] != want_q[i] && ((got_q[i] | want_q[i]) != 0x80);  // ±0 alike
    for (size_t i = 0; i < got_scale.size(); ++i) bad_scale += std::memcmp(&got_scale[i], &want_scale[i], 4) != 0;
    EXPECT_EQ(bad_q, 0u) << "of " << got_q.size() << " bytes differ";
    EXPECT_EQ(bad_scale, 0u) << "of " << got_scale.size() << " scales differ (layout [K/128, T])";
  }
}

// Every element of a [rows, ld] bf16 matrix outside the first T rows' first N columns still holds
// its original bits: padding rows/columns of the cuBLASLt path must not leak into y.

// The skinny kernel with block-FP8 weights (the W8A16 path for T <= 64, beta 0) against the
// dequantized reference: a scale row cut short (N % 128 != 0), K of 3 scale blocks, split-K over 9B
// shapes; outside y's T × N block nothing changes.
TEST(GpuGemm, Fp8SkinnyMatchesDequantizedReference) {
  cuda::GemmRunner runner;
  std::mt19937 rng(23);
  for (const Shape& s :
       {Shape{1, 200, 384, 384, 200}, Shape{9, 320, 384, 392, 328}, Shape{64, 12352, 4096, 4096, 12352},
        Shape{3, 4096, 12288, 12288, 4096}, Shape{24, 256, 128, 128, 256}, Shape{24, 256, 256, 256, 256},
        Shape{2, 256, 128, 128, 256}}) {  // the last three: tiny MoE shared experts
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    const Fp8Weight W(s.N, s.K, rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 24);
    DeviceBuffer<bf16> dx(x.bits), dy(size_t((s.T + 2) * s.ldy));
    const auto poison = dy.download();
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kKernel);
    EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kKernel);
    std::vector<float> want(size_t(s.T * s.ldy));
    cpu::gemm_fp8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K);
    const auto got_bits = dy.download();
    expect_outside_unchanged(got_bits, poison, s.T, s.N, s.ldy);
    EXPECT_TRUE(all_close(columns(testing_util::to_float(got_bits), s.T, s.N, s.ldy), columns(want, s.T, s.N, s.ldy),
                          2e-2f, 1e-2f));
  }
}

// The W8A16 skinny kernel reads E4M3 bytes as BF16 by moving bits (each weight times 2^-120, x
// times 2^64): subnormal weights (exponent field 0, magnitudes 2^-9..7·2^-9) and ±0 must come out
// exactly too. A weight of only those, scale 1, against the dequantized reference.
TEST(GpuGemm, Fp8SkinnyKeepsSubnormalWeights) {
  cuda::GemmRunner runner;
  std::mt19937 rng(31);
  const int64_t T = 2, N = 128, K = 384;
  std::vector<uint8_t> w(size_t(N * K));
  for (auto& b : w) b = uint8_t(rng()) & 0x87;  // sign and 3 mantissa bits, exponent 0
  const std::vector<float> scales(size_t(K / 128), 1.f);
  const auto x = random_bf16(size_t(T * K), 32);
  DeviceBuffer<uint8_t> dw(w);
  DeviceBuffer<float> dscale(scales);
  DeviceBuffer<bf16> dx(x.bits), dy(size_t(T * N));
  runner.gemm_fp8(dx.get(), K, dw.get(), dscale.get(), dy.get(), N, T, N, K, 0.f, nullptr, cuda::Fp8Path::kKernel);
  EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kKernel);
  std::vector<float> want(size_t(T * N));
  cpu::gemm_fp8(x.values.data(), K, w.data(), scales.data(), want.data(), N, T, N, K);
  EXPECT_GT(rms(want), 1e-2);
  EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, 1e-4f, 8e-3f));  // BF16 y: 2^-9 relative
}

// Every tiling the autotune may pick (64 rows per block, for T <= 8 also 32, 48 (BF16) or 128 (FP8);
// split-K, whose fixup reads four outputs at once unless N (203) is no multiple of 4), BF16 and FP8
// weights (wgmma for BF16 above 8 tokens), against the references; tilings the kernel cannot run are
// refused.
TEST(GpuGemm, SkinnyTilingsMatchReference) {
  cuda::GemmRunner runner;
  std::mt19937 rng(41);
  const std::vector<cuda::SkinnyTiling> few_tokens = {{64, 1}, {64, 3}, {32, 1},  {32, 2},
                                                      {48, 1}, {48, 2}, {128, 1}, {128, 2}};
  const std::vector<cuda::SkinnyTiling> many_tokens = {{64, 1}, {64, 2}, {64, 3}};
  for (const auto& [s, tilings] :
       {std::pair{Shape{1, 200, 1024, 1024, 200}, few_tokens}, std::pair{Shape{8, 4096, 4096, 4096, 4096}, few_tokens},
        std::pair{Shape{5, 96, 384, 392, 104}, few_tokens}, std::pair{Shape{3, 203, 1024, 1024, 211}, few_tokens},
        std::pair{Shape{40, 1000, 2048, 2056, 1000}, many_tokens},
        std::pair{Shape{64, 4096, 1024, 1024, 4104}, many_tokens}}) {
    const auto x = random_bf16(size_t(s.T * s.ldx), 42), w = random_bf16(size_t(s.N * s.K), 43, 0.05f);
    const Fp8Weight W8(s.N, s.K, rng);
    DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dy(size_t(s.T * s.ldy));
    std::vector<float> want(size_t(s.T * s.ldy)), want8(size_t(s.T * s.ldy));
    cpu::gemm(x.values.data(), s.ldx, w.values.data(), want.data(), s.ldy, s.T, s.N, s.K);
    cpu::gemm_fp8(x.values.data(), s.ldx, W8.w.data(), W8.scales.data(), want8.data(), s.ldy, s.T, s.N, s.K);
    for (const cuda::SkinnyTiling& tiling : tilings) {
      SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + " rows " +
                   std::to_string(tiling.tile_rows) + " splits " + std::to_string(tiling.splits));
      // y is poisoned before every run, so a tiling that leaves outputs unwritten cannot pass on an
      // earlier tiling's results.
      if (tiling.tile_rows != 128) {  // FP8 only (BF16 has enough blocks with 64 rows)
        dy.poison();
        runner.skinny_gemm(dx.get(), s.ldx, dw.get(), nullptr, dy.get(), s.ldy, s.T, s.N, s.K, tiling, nullptr);
        EXPECT_TRUE(all_close(columns(testing_util::to_float(dy.download()), s.T, s.N, s.ldy),
                              columns(want, s.T, s.N, s.ldy), 2e-2f, 1e-2f));
      }
      if (tiling.tile_rows == 48) continue;  // BF16 only (FP8 scale blocks are 128 rows)
      dy.poison();
      runner.skinny_gemm(dx.get(), s.ldx, W8.dw.get(), W8.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, tiling,
                         nullptr);
      EXPECT_TRUE(all_close(columns(testing_util::to_float(dy.download()), s.T, s.N, s.ldy),
                            columns(want8, s.T, s.N, s.ldy), 2e-2f, 1e-2f));
    }
  }
  DeviceBuffer<bf16> dx(size_t(16 * 512)), dw(size_t(256 * 512)), dy(size_t(16 * 256));
  for (const auto& [T, tiling] : {std::pair{9, cuda::SkinnyTiling{32, 1}}, std::pair{4, cuda::SkinnyTiling{64, 0}},
                                  std::pair{4, cuda::SkinnyTiling{64, 5}}, std::pair{4, cuda::SkinnyTiling{40, 1}},
                                  std::pair{4, cuda::SkinnyTiling{128, 1}}}) {
    EXPECT_THROW(runner.skinny_gemm(dx.get(), 512, dw.get(), nullptr, dy.get(), 256, T, 256, 512, tiling, nullptr),
                 std::invalid_argument);
  }
  DeviceBuffer<float> dscale(size_t(8));  // FP8 with 48-row tiles (they would straddle scale blocks), 128 for T > 8
  for (const auto& [T, tiling] : {std::pair{4, cuda::SkinnyTiling{48, 1}}, std::pair{9, cuda::SkinnyTiling{128, 1}}}) {
    EXPECT_THROW(runner.skinny_gemm(dx.get(), 512, dw.get(), dscale.get(), dy.get(), 256, T, 256, 512, tiling, nullptr),
                 std::invalid_argument);
  }
}

// cuBLASLt W8A8 against the CPU reference of the same math (x quantized per token and 128-group,
// dequantized, times the dequantized W, fp32), and both FP8 paths against the unquantized-x
// reference to show what activation quantization costs. T = 1, 3, 5, 33 are padded (cuBLASLt has no
// algorithm for them as they are), T = 1001 is split into 960 direct + 41 padded rows.
TEST(GpuGemm, Fp8CublasLtMatchesQuantizedReference) {
  if (!is_hopper()) GTEST_SKIP() << "cuBLASLt block-scaled FP8 is an sm_90 feature";
  cuda::GemmRunner runner;
  std::mt19937 rng(12);
  const Shape shapes[] = {
      {1, 256, 512, 512, 256},        {5, 384, 1024, 1032, 400},  // views: ldx > K, ldy > N
      {33, 256, 512, 512, 264},       {8, 512, 2048, 2048, 520},    {64, 512, 2048, 2048, 512},
      {1000, 640, 1024, 1024, 640},   {1001, 640, 1024, 1024, 648},  // T not a multiple of 64 or 128
      {1, 12352, 4096, 4096, 12352},   // 9B gdn in_proj at decode (N/128 not whole: partial scale row)
      {3, 8192, 4096, 4096, 8192},     // 9B q_proj, decode of 3 sequences
      {64, 8192, 4096, 4096, 8192},    // 9B q_proj
      {64, 4096, 12288, 12288, 4096},  // 9B mlp down
      {64, 2048, 512, 512, 2048},      // 35B-A3B expert down
  };
  for (const Shape& s : shapes) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    const Fp8Weight W(s.N, s.K, rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 13);
    const int64_t rows = s.T + 3;  // y has rows past T (and columns past N): all must stay poisoned
    DeviceBuffer<bf16> dx(x.bits), dy(size_t(rows * s.ldy)), dy_kernel(size_t(rows * s.ldy));  // poisoned (NaN)
    const auto poison = dy.download();
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kCublasLt);
    ASSERT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kCublasLt) << runner.fp8_fallback_reason();
    const int64_t t_pad = runner.last_fp8_padded_tokens();
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy_kernel.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kKernel);
    const auto got_bits = dy.download();
    expect_outside_unchanged(got_bits, poison, s.T, s.N, s.ldy);
    const auto got = columns(testing_util::to_float(got_bits), s.T, s.N, s.ldy);
    const auto got_kernel = columns(testing_util::to_float(dy_kernel.download()), s.T, s.N, s.ldy);
    std::vector<float> want(size_t(s.T * s.ldy)), want_unquantized(size_t(s.T * s.ldy));
    cpu::gemm_fp8_w8a8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K);
    cpu::gemm_fp8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want_unquantized.data(), s.ldy, s.T, s.N, s.K);
    want = columns(want, s.T, s.N, s.ldy);
    want_unquantized = columns(want_unquantized, s.T, s.N, s.ldy);
    // Same quantized operands on both sides: what differs is fp32 summation order and the BF16
    // rounding of y (2^-9 relative).
    EXPECT_TRUE(all_close(got, want, float(2e-3 * rms(want)), 1e-2f));
    const double err_lt = relative_rms_error(got, want_unquantized),
                 err_kernel = relative_rms_error(got_kernel, want_unquantized);
    std::printf(
        "  fp8 T=%-5ld (cuBLASLt ran T_pad=%-5ld) N=%-6ld K=%-6ld rel. RMS error vs unquantized-x fp32: "
        "cublaslt-w8a8 %.4f, w8a16-kernel %.4f\n",
        long(s.T), long(t_pad), long(s.N), long(s.K), err_lt, err_kernel);
    // E4M3 keeps 3 mantissa bits: ~2-4% relative error per activation, averaged over K.
    EXPECT_LT(err_lt, 0.06);
    EXPECT_LT(err_kernel, 0.01);
  }
  const size_t plans = runner.cached_plans();
  const Shape& s = shapes[0];
  DeviceBuffer<bf16> dx(size_t(s.T * s.ldx)), dy(size_t(s.T * s.ldy));
  DeviceBuffer<uint8_t> dw(size_t(s.N * s.K));
  DeviceBuffer<float> dscale(size_t(8));
  ASSERT_CUDA(cudaMemset(dx.get(), 0, dx.size() * sizeof(bf16)));
  ASSERT_CUDA(cudaMemset(dw.get(), 0, dw.size()));
  runner.gemm_fp8(dx.get(), s.ldx, dw.get(), dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr);
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(runner.cached_plans(), plans);  // the repeated shape reused its plan
}

// beta = 1 through the padded path (y copied into the scratch, accumulated, copied out) and the
// direct one, on a view (ldy > N) with rows past T that must not change.
TEST(GpuGemm, Fp8CublasLtAccumulatesWithBeta) {
  if (!is_hopper()) GTEST_SKIP() << "cuBLASLt block-scaled FP8 is an sm_90 feature";
  cuda::GemmRunner runner;
  std::mt19937 rng(14);
  const int64_t N = 256, K = 512, ldy = 264;
  const Fp8Weight W(N, K, rng);
  for (int64_t T : {1, 5, 33, 64, 67}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const int64_t rows = T + 2;
    const auto x = random_bf16(size_t(T * K), 15), y0 = random_bf16(size_t(rows * ldy), 16, 10.f);
    DeviceBuffer<bf16> dx(x.bits), dy(y0.bits);
    runner.gemm_fp8(dx.get(), K, W.dw.get(), W.dscale.get(), dy.get(), ldy, T, N, K, 1.f, nullptr,
                    cuda::Fp8Path::kCublasLt);
    std::vector<float> want = y0.values;
    cpu::gemm_fp8_w8a8(x.values.data(), K, W.w.data(), W.scales.data(), want.data(), ldy, T, N, K, 1.f);
    const auto got_bits = dy.download();
    expect_outside_unchanged(got_bits, y0.bits, T, N, ldy);
    want = columns(want, T, N, ldy);
    // Looser than without beta: where y0 and the product cancel, the product's own error (Hopper's
    // FP8 MMA sums each 128-deep block at reduced precision before cuBLASLt promotes it to fp32,
    // up to ~3e-3 of the product on an H100) is no longer small against the result.
    EXPECT_TRUE(all_close(columns(testing_util::to_float(got_bits), T, N, ldy), want, float(5e-3 * rms(want)), 1e-2f));
  }
}

// A padded call (quantize, matmul into the scratch, copy-out) replays from a CUDA graph once its
// plan and buffers exist; capturing allocates nothing.
TEST(GpuGemm, Fp8CublasLtPaddedCallReplaysFromAGraph) {
  if (!is_hopper()) GTEST_SKIP() << "cuBLASLt block-scaled FP8 is an sm_90 feature";
  cuda::GemmRunner runner;
  std::mt19937 rng(19);
  const int64_t T = 3, N = 512, K = 1024;
  const Fp8Weight W(N, K, rng);
  const auto x = random_bf16(size_t(T * K), 20);
  DeviceBuffer<bf16> dx(x.bits), dy(size_t(T * N));
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  runner.gemm_fp8(dx.get(), K, W.dw.get(), W.dscale.get(), dy.get(), N, T, N, K, 0.f, stream, cuda::Fp8Path::kCublasLt);
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  dy.poison();
  ASSERT_CUDA(cudaDeviceSynchronize());  // the memset is on the legacy stream, the graph on `stream`
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  runner.gemm_fp8(dx.get(), K, W.dw.get(), W.dscale.get(), dy.get(), N, T, N, K, 0.f, stream, cuda::Fp8Path::kCublasLt);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> want(size_t(T * N));
  cpu::gemm_fp8_w8a8(x.values.data(), K, W.w.data(), W.scales.data(), want.data(), N, T, N, K);
  EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, float(2e-3 * rms(want)), 1e-2f));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// A chain of dependent skinny GEMMs (programmatic launches, each waiting for the one before), one of
// them split-K (its tile counters must reset for the next replay) and one with FP8 weights, captured
// in a graph: every replay gives the bits of the same chain run directly, at T = 1 (mma.sync) and
// T = 40 (wgmma).
TEST(GpuGemm, SkinnyChainReplaysFromAGraph) {
  cuda::GemmRunner runner;
  std::mt19937 rng(51);
  const int64_t K1 = 512, N1 = 768, N2 = 1024, N3 = 256;
  const auto w1 = random_bf16(size_t(N1 * K1), 52, 0.05f), w2 = random_bf16(size_t(N2 * N1), 53, 0.05f);
  const Fp8Weight w3(N3, N2, rng);
  DeviceBuffer<bf16> dw1(w1.bits), dw2(w2.bits);
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int64_t T : {1, 40}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = random_bf16(size_t(T * K1), uint32_t(54 + T));
    DeviceBuffer<bf16> dx(x.bits), y1(size_t(T * N1)), y2(size_t(T * N2)), y3(size_t(T * N3));
    const auto chain = [&] {
      runner.skinny_gemm(dx.get(), K1, dw1.get(), nullptr, y1.get(), N1, T, N1, K1, {64, 1}, stream);
      runner.skinny_gemm(y1.get(), N1, dw2.get(), nullptr, y2.get(), N2, T, N2, N1, {64, 3}, stream);
      runner.skinny_gemm(y2.get(), N2, w3.dw.get(), w3.dscale.get(), y3.get(), N3, T, N3, N2, {64, 1}, stream);
    };
    chain();
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    const auto want = y3.download();
    cudaGraph_t graph;
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    chain();
    ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      y1.poison();
      y2.poison();
      y3.poison();
      ASSERT_CUDA(cudaDeviceSynchronize());  // the poison is on the legacy stream, the graph on `stream`
      ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      ASSERT_CUDA(cudaStreamSynchronize(stream));
      const auto got = y3.download();
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(bf16)), 0) << "replay " << replay;
    }
    std::vector<float> h1(size_t(T * N1)), h2(size_t(T * N2)), ref(size_t(T * N3));
    cpu::gemm(x.values.data(), K1, w1.values.data(), h1.data(), N1, T, N1, K1);
    h1 = testing_util::to_float(testing_util::to_bf16(h1));  // the device chain rounds each y to BF16
    cpu::gemm(h1.data(), N1, w2.values.data(), h2.data(), N2, T, N2, N1);
    h2 = testing_util::to_float(testing_util::to_bf16(h2));
    cpu::gemm_fp8(h2.data(), N2, w3.w.data(), w3.scales.data(), ref.data(), N3, T, N3, N2);
    EXPECT_TRUE(all_close(testing_util::to_float(want), ref, 2e-2f, 2e-2f));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

// kAuto at T <= 64 times the skinny kernel's forms that the numerics allow against cuBLASLt W8A8 on
// the first call of a shape and keeps the fastest: whichever it reports is one the numerics allow,
// the result is that path's math, and the choice sticks. kW8A16 also holds for large T.
TEST(GpuGemm, Fp8AutoKeepsTheFastestPathTheNumericsAllow) {
  if (!is_hopper()) GTEST_SKIP() << "cuBLASLt block-scaled FP8 is an sm_90 feature";
  std::mt19937 rng(25);
  const std::vector<Shape> shapes = {Shape{1, 4096, 4096, 4096, 4096}, Shape{8, 12352, 4096, 4096, 12352},
                                     Shape{40, 8192, 4096, 4096, 8192}, Shape{300, 1024, 2048, 2048, 1024}};
  for (const cuda::Fp8Numerics numerics :
       {cuda::Fp8Numerics::kW8A8, cuda::Fp8Numerics::kW8A16, cuda::Fp8Numerics::kFastest}) {
    cuda::GemmRunner runner;
    runner.set_fp8_numerics(numerics);
    for (const Shape& s : shapes) {
      SCOPED_TRACE(std::string(cuda::to_string(numerics)) + " T=" + std::to_string(s.T) + " N=" + std::to_string(s.N));
      const Fp8Weight W(s.N, s.K, rng);
      const auto x = random_bf16(size_t(s.T * s.ldx), 26);
      DeviceBuffer<bf16> dx(x.bits), dy(size_t(s.T * s.ldy));
      runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr);
      const cuda::Fp8Path first = runner.last_fp8_path();
      const bool w8a8 = first == cuda::Fp8Path::kCublasLt || first == cuda::Fp8Path::kSkinnyW8A8;
      ASSERT_NE(first, cuda::Fp8Path::kAuto);
      if (numerics == cuda::Fp8Numerics::kW8A8) EXPECT_TRUE(w8a8) << cuda::to_string(first);
      if (numerics == cuda::Fp8Numerics::kW8A16) EXPECT_EQ(first, cuda::Fp8Path::kKernel);
      runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr);
      EXPECT_EQ(runner.last_fp8_path(), first) << "the choice is cached per shape";
      std::vector<float> want(size_t(s.T * s.ldy));
      if (w8a8) {
        cpu::gemm_fp8_w8a8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K);
      } else {
        cpu::gemm_fp8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K);
      }
      std::printf("  fp8 auto (%s) T=%ld N=%ld K=%ld: %s\n", cuda::to_string(numerics), long(s.T), long(s.N),
                  long(s.K), cuda::to_string(first));
      EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, 2e-2f, 1e-2f));
    }
  }
}

// x already quantized (Fp8Rows, as the norms and SiLU-mul write them): the W8A8 skinny kernel reads
// those rows instead of x (given zeros for x here) and gives the same bits as quantizing x itself.
TEST(GpuGemm, Fp8SkinnyW8A8ReadsPrequantizedRows) {
  if (!is_hopper()) GTEST_SKIP() << "the W8A8 skinny kernel runs on wgmma (sm_90)";
  cuda::GemmRunner runner;
  std::mt19937 rng(51);
  for (const Shape& s : {Shape{1, 512, 1024, 1024, 512}, Shape{24, 768, 2048, 2056, 776}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T));
    const Fp8Weight W(s.N, s.K, rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 52);
    DeviceBuffer<bf16> dx(x.bits), zeros(std::vector<bf16>(x.bits.size(), bf16{0})), dy(size_t(s.T * s.ldy)),
        dy_rows(size_t(s.T * s.ldy));
    testing_util::DeviceFp8Rows fp8(s.T, s.K);
    cuda::quantize_fp8_per_token_group(dx.get(), s.ldx, s.T, s.K, fp8.codes.get(), fp8.scales.get(), nullptr);
    const Fp8Rows rows = fp8.rows();
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kSkinnyW8A8);
    runner.gemm_fp8(zeros.get(), s.ldx, W.dw.get(), W.dscale.get(), dy_rows.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kSkinnyW8A8, &rows);
    const auto want = dy.download(), got = dy_rows.download();
    EXPECT_GT(rms(columns(testing_util::to_float(want), s.T, s.N, s.ldy)), 1e-2);
    for (int64_t t = 0; t < s.T; ++t) {
      for (int64_t n = 0; n < s.N; ++n) ASSERT_EQ(got[size_t(t * s.ldy + n)].bits, want[size_t(t * s.ldy + n)].bits);
    }
  }
}

// kAuto calls that hand in x quantized are timed apart from those that do not (their W8A8 skinny
// kernel launches no quantization): the same shape is tuned again on its first call with rows, and
// again on its first without; afterwards neither retunes, and each call's result is its path's math.
TEST(GpuGemm, Fp8AutoTimesCallsWithQuantizedRowsApart) {
  if (!is_hopper()) GTEST_SKIP() << "the W8A8 skinny kernel runs on wgmma (sm_90)";
  cuda::GemmRunner runner;
  runner.set_fp8_numerics(cuda::Fp8Numerics::kFastest);
  std::mt19937 rng(57);
  const Shape s{8, 2048, 2048, 2048, 2048};
  const Fp8Weight W(s.N, s.K, rng);
  const auto x = random_bf16(size_t(s.T * s.ldx), 58);
  DeviceBuffer<bf16> dx(x.bits), dy(size_t(s.T * s.ldy));
  testing_util::DeviceFp8Rows fp8(s.T, s.K);
  cuda::quantize_fp8_per_token_group(dx.get(), s.ldx, s.T, s.K, fp8.codes.get(), fp8.scales.get(), nullptr);
  const Fp8Rows rows = fp8.rows();
  std::vector<float> want_w8a8(size_t(s.T * s.ldy)), want_w8a16(want_w8a8.size());
  cpu::gemm_fp8_w8a8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want_w8a8.data(), s.ldy, s.T, s.N, s.K);
  cpu::gemm_fp8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want_w8a16.data(), s.ldy, s.T, s.N, s.K);
  const auto run = [&](const Fp8Rows* x_fp8) {
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kAuto, x_fp8);
    const cuda::Fp8Path path = runner.last_fp8_path();
    const bool w8a8 = path == cuda::Fp8Path::kCublasLt || path == cuda::Fp8Path::kSkinnyW8A8;
    EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), w8a8 ? want_w8a8 : want_w8a16, 2e-2f, 1e-2f))
        << cuda::to_string(path);
    return runner.last_autotune();
  };
  const std::string without_rows = run(nullptr);
  ASSERT_NE(without_rows.find("w8a8-skinny"), std::string::npos) << without_rows;
  const std::string with_rows = run(&rows);
  EXPECT_NE(with_rows, without_rows) << "a call with rows is timed on its own";
  EXPECT_EQ(run(nullptr), with_rows) << "the call without rows keeps its plan";
  EXPECT_EQ(run(&rows), with_rows) << "so does the call with rows";
}

// The W8A8 skinny kernel (T <= 64: x quantized per token and 128-group, E4M3 wgmma with the
// scales applied per 128-k step) against the CPU reference of that math, with split-K, views and a
// partial row tile; nothing outside y's T × N block changes; what it cannot run is refused.
TEST(GpuGemm, Fp8SkinnyW8A8MatchesQuantizedReference) {
  if (!is_hopper()) GTEST_SKIP() << "the W8A8 skinny kernel runs on wgmma (sm_90)";
  cuda::GemmRunner runner;
  std::mt19937 rng(31);
  for (const Shape& s : {Shape{1, 200, 1024, 1024, 200}, Shape{5, 384, 1024, 1032, 400}, Shape{9, 200, 1024, 1024, 200},
                         Shape{16, 320, 512, 520, 328}, Shape{24, 768, 256, 256, 768}, Shape{24, 256, 384, 384, 256},
                         Shape{24, 256, 128, 136, 264}, Shape{24, 203, 1024, 1024, 203},
                         Shape{33, 4096, 4096, 4096, 4096}, Shape{64, 1000, 2048, 2056, 1000}}) {
    const Fp8Weight W(s.N, s.K, rng);
    const auto x = random_bf16(size_t(s.T * s.ldx), 32);
    std::vector<float> want(size_t(s.T * s.ldy));
    cpu::gemm_fp8_w8a8(x.values.data(), s.ldx, W.w.data(), W.scales.data(), want.data(), s.ldy, s.T, s.N, s.K);
    want = columns(want, s.T, s.N, s.ldy);
    DeviceBuffer<bf16> dx(x.bits), dy(size_t((s.T + 2) * s.ldy));
    // 80 and 96 rows: x as the wgmma's A operand, tiles straddling W's 128-row scale blocks.
    for (const cuda::SkinnyTiling& tiling :
         {cuda::SkinnyTiling{64, 1}, cuda::SkinnyTiling{64, 3}, cuda::SkinnyTiling{128, 1}, cuda::SkinnyTiling{128, 2},
          cuda::SkinnyTiling{80, 1}, cuda::SkinnyTiling{96, 1}, cuda::SkinnyTiling{96, 3}}) {
      if (tiling.splits > s.K / 128) continue;  // each split needs a 128-k step
      SCOPED_TRACE("T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + " rows " +
                   std::to_string(tiling.tile_rows) + " splits " + std::to_string(tiling.splits));
      dy.poison();
      const auto poison = dy.download();
      runner.skinny_gemm(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, tiling, nullptr,
                         /*w8a8=*/true);
      const auto got = dy.download();
      expect_outside_unchanged(got, poison, s.T, s.N, s.ldy);
      // The same quantized operands as the reference: the fp32 summation and y's BF16 rounding differ.
      EXPECT_TRUE(
          all_close(columns(testing_util::to_float(got), s.T, s.N, s.ldy), want, float(2e-3 * rms(want)), 1e-2f));
    }
    dy.poison();
    runner.gemm_fp8(dx.get(), s.ldx, W.dw.get(), W.dscale.get(), dy.get(), s.ldy, s.T, s.N, s.K, 0.f, nullptr,
                    cuda::Fp8Path::kSkinnyW8A8);
    EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kSkinnyW8A8);
    EXPECT_TRUE(all_close(columns(testing_util::to_float(dy.download()), s.T, s.N, s.ldy), want,
                          float(2e-3 * rms(want)), 1e-2f));
  }
  const Fp8Weight W(256, 512, rng);
  DeviceBuffer<bf16> dx(size_t(65 * 512)), dw(size_t(256 * 512)), dy(size_t(65 * 256));
  for (const auto& [T, tiling] : {std::pair{65, cuda::SkinnyTiling{64, 1}}, std::pair{4, cuda::SkinnyTiling{32, 1}},
                                  std::pair{16, cuda::SkinnyTiling{48, 1}}}) {
    EXPECT_THROW(runner.skinny_gemm(dx.get(), 512, W.dw.get(), W.dscale.get(), dy.get(), 256, T, 256, 512, tiling,
                                    nullptr, /*w8a8=*/true),
                 std::invalid_argument)
        << "T=" << T << ", " << tiling.tile_rows << " rows";
  }
  EXPECT_THROW(runner.skinny_gemm(dx.get(), 512, dw.get(), nullptr, dy.get(), 256, 16, 256, 512,
                                  cuda::SkinnyTiling{64, 1}, nullptr, /*w8a8=*/true),
               std::invalid_argument);  // BF16 weights
  EXPECT_THROW(runner.skinny_gemm(dx.get(), 512, W.dw.get(), W.dscale.get(), dy.get(), 256, 16, 256, 512,
                                  cuda::SkinnyTiling{96, 1}, nullptr, /*w8a8=*/false),
               std::invalid_argument);  // 96-row tiles are W8A8 only
  EXPECT_THROW(runner.gemm_fp8(dx.get(), 512, W.dw.get(), W.dscale.get(), dy.get(), 256, 16, 256, 512, 1.f, nullptr,
                               cuda::Fp8Path::kSkinnyW8A8),
               std::invalid_argument);  // beta
}

TEST(GpuGemm, Fp8FallsBackToTheKernelWhereCublasLtCannot) {
  // K = 384: K/128 = 3 is not a multiple of 4, so the checkpoint's scale grid is not cuBLASLt's.
  // Above 64 tokens only the W8A16 kernel can run it; up to 64 the W8A8 skinny kernel (on Hopper)
  // keeps the default numerics.
  cuda::GemmRunner runner;
  std::mt19937 rng(17);
  const int64_t N = 256, K = 384;
  const Fp8Weight W(N, K, rng);
  for (const int64_t T : {100, 9}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = random_bf16(size_t(T * K), 18);
    DeviceBuffer<bf16> dx(x.bits), dy(size_t(T * N));
    runner.gemm_fp8(dx.get(), K, W.dw.get(), W.dscale.get(), dy.get(), N, T, N, K, 0.f, nullptr);
    std::vector<float> want(size_t(T * N));
    if (T <= 64 && is_hopper()) {
      EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kSkinnyW8A8);
      cpu::gemm_fp8_w8a8(x.values.data(), K, W.w.data(), W.scales.data(), want.data(), N, T, N, K);
    } else {
      EXPECT_EQ(runner.last_fp8_path(), cuda::Fp8Path::kKernel);
      EXPECT_FALSE(runner.fp8_fallback_reason().empty());
      cpu::gemm_fp8(x.values.data(), K, W.w.data(), W.scales.data(), want.data(), N, T, N, K);
    }
    EXPECT_TRUE(all_close(testing_util::to_float(dy.download()), want, 2e-2f, 1e-2f));
    EXPECT_THROW(runner.gemm_fp8(dx.get(), K, W.dw.get(), W.dscale.get(), dy.get(), N, T, N, K, 0.f, nullptr,
                                 cuda::Fp8Path::kCublasLt),
                 std::runtime_error);
  }
}

TEST(GpuGemm, RejectsBadShape) {
  cuda::GemmRunner runner;
  EXPECT_THROW(
      runner.gemm(static_cast<const bf16*>(nullptr), 4, nullptr, static_cast<bf16*>(nullptr), 8, 1, 8, 8, 0.f, nullptr),
      std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
