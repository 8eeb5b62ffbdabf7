// Fused q/k norm + partial NeoX RoPE + de-interleave, and plain RoPE, against the CPU reference.
#include <random>
#include <vector>

#include "kernels/rope.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;
using testing_util::to_float;

std::vector<int32_t> random_positions(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (auto& v : p) v = int32_t(rng() % 200000);
  return p;
}

TEST(GpuQkNormRope, MatchesReference) {
  for (const RopeParams params : {RopeParams{256, 64, 1e7f}, RopeParams{128, 128, 1e6f}}) {
    SCOPED_TRACE("head_dim " + std::to_string(params.head_dim));
    const int64_t T = 23, Hq = 8, Hkv = 2, D = params.head_dim, ldk = Hkv * D + 16;
    const auto qg = random_bf16(size_t(T * Hq * 2 * D), 1), k = random_bf16(size_t(T * ldk), 2);
    const auto qw = random_bf16(size_t(D), 3, 0.1f), kw = random_bf16(size_t(D), 4, 0.1f);
    const auto positions = random_positions(size_t(T), 5);
    DeviceBuffer<bf16> dqg(qg.bits), dk(k.bits), dqw(qw.bits), dkw(kw.bits), dq(size_t(T * Hq * D)),
        dko(size_t(T * Hkv * D));
    DeviceBuffer<int32_t> dpos(positions);
    cuda::qk_norm_rope(dqg.get(), Hq * 2 * D, dk.get(), ldk, dqw.get(), dkw.get(), 1e-6f, dpos.get(), T, Hq, Hkv, params,
                       dq.get(), dko.get(), nullptr);
    std::vector<float> q_want(size_t(T * Hq * D)), k_want(size_t(T * Hkv * D));
    cpu::qk_norm_rope(qg.values.data(), Hq * 2 * D, k.values.data(), ldk, qw.values.data(), kw.values.data(), 1e-6f,
                      positions.data(), T, Hq, Hkv, params, q_want.data(), k_want.data());
    EXPECT_TRUE(all_close(to_float(dq.download()), q_want, 2e-2f, 1e-2f));
    EXPECT_TRUE(all_close(to_float(dko.download()), k_want, 2e-2f, 1e-2f));
  }
}

TEST(GpuRope, InPlaceStrided) {
  const RopeParams params{256, 64, 1e7f};
  const int64_t T = 9, H = 4, ldx = H * 512;  // heads every 512 elements
  const auto x = random_bf16(size_t(T * ldx), 6);
  const auto positions = random_positions(size_t(T), 7);
  DeviceBuffer<bf16> dx(x.bits);
  DeviceBuffer<int32_t> dpos(positions);
  cuda::rope(dx.get(), ldx, 512, T, H, dpos.get(), params, nullptr);
  std::vector<float> want = x.values;
  cpu::rope(want.data(), ldx, 512, T, H, positions.data(), params);
  EXPECT_TRUE(all_close(to_float(dx.download()), want, 2e-2f, 1e-2f));
}

}  // namespace
}  // namespace ds::kernels
