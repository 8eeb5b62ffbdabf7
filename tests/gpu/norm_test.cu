// RMSNorm (1+w), fused residual add, per-head norm against the CPU reference.
#include <vector>

#include "kernels/norm.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;
using testing_util::to_float;

TEST(GpuRmsNorm, VectorAndScalarPaths) {
  for (int64_t H : {4096, 2048, 100}) {
    SCOPED_TRACE("H=" + std::to_string(H));
    const int64_t T = 37, ldx = H + (H % 8 == 0 ? 8 : 3);
    const auto x = random_bf16(size_t(T * ldx), 1, 3.f), w = random_bf16(size_t(H), 2, 0.1f);
    DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dy(size_t(T * H));
    cuda::rms_norm(dx.get(), ldx, dw.get(), dy.get(), H, T, H, 1e-6f, nullptr);
    std::vector<float> want(size_t(T * H));
    cpu::rms_norm(x.values.data(), ldx, w.values.data(), want.data(), H, T, H, 1e-6f);
    EXPECT_TRUE(all_close(to_float(dy.download()), want, 1e-2f, 1e-2f));
  }
}

TEST(GpuAddRmsNorm, UpdatesResidualAndNormalises) {
  const int64_t T = 19, H = 2048;
  const auto x = random_bf16(size_t(T * H), 3), r = random_bf16(size_t(T * H), 4), w = random_bf16(size_t(H), 5, 0.1f);
  DeviceBuffer<bf16> dx(x.bits), dr(r.bits), dw(w.bits), dy(size_t(T * H));
  cuda::add_rms_norm(dr.get(), dx.get(), H, dw.get(), dy.get(), H, T, H, 1e-6f, nullptr);
  // Reference on the bf16-rounded sum, as the kernel normalises the stored residual.
  std::vector<float> sum(size_t(T * H));
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = bf16_to_float(float_to_bf16(r.values[i] + x.values[i]));
  std::vector<float> want(size_t(T * H));
  cpu::rms_norm(sum.data(), H, w.values.data(), want.data(), H, T, H, 1e-6f);
  EXPECT_TRUE(all_close(to_float(dr.download()), sum, 0.f, 0.f));
  EXPECT_TRUE(all_close(to_float(dy.download()), want, 1e-2f, 1e-2f));
}

// With FP8 output (kernels::Fp8Rows, for the W8A8 linears after): the BF16 output and residual are
// the same bits as without, and the FP8 rows are exactly the quantization of that output; H must be
// a whole number of 128-groups.
TEST(GpuRmsNorm, Fp8OutputIsTheQuantizedOutput) {
  for (const bool add : {false, true}) {
    SCOPED_TRACE(add ? "add_rms_norm" : "rms_norm");
    const int64_t T = 13, H = 2176, ldx = H + 8;  // H: 17 groups, the last pass of the block partial
    const auto x = random_bf16(size_t(T * ldx), 8, 3.f), r = random_bf16(size_t(T * H), 9);
    const auto w = random_bf16(size_t(H), 10, 0.1f);
    DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dr(r.bits), dr_plain(r.bits), dy(size_t(T * H)), dy_plain(size_t(T * H));
    testing_util::DeviceFp8Rows fp8(T, H);
    const Fp8Rows rows = fp8.rows();
    if (add) {
      cuda::add_rms_norm(dr.get(), dx.get(), ldx, dw.get(), dy.get(), H, T, H, 1e-6f, nullptr, &rows);
      cuda::add_rms_norm(dr_plain.get(), dx.get(), ldx, dw.get(), dy_plain.get(), H, T, H, 1e-6f, nullptr);
      EXPECT_TRUE(all_close(to_float(dr.download()), to_float(dr_plain.download()), 0.f, 0.f));
    } else {
      cuda::rms_norm(dx.get(), ldx, dw.get(), dy.get(), H, T, H, 1e-6f, nullptr, &rows);
      cuda::rms_norm(dx.get(), ldx, dw.get(), dy_plain.get(), H, T, H, 1e-6f, nullptr);
    }
    const auto y = dy.download();
    EXPECT_TRUE(all_close(to_float(y), to_float(dy_plain.download()), 0.f, 0.f));
    EXPECT_TRUE(testing_util::fp8_rows_quantize(fp8, y, H));
  }
  const int64_t T = 2, H = 200;  // not whole 128-groups
  DeviceBuffer<bf16> dx(static_cast<size_t>(T * H)), dw(static_cast<size_t>(H)), dy(static_cast<size_t>(T * H));
  testing_util::DeviceFp8Rows fp8(T, 256);
  const Fp8Rows rows = fp8.rows();
  EXPECT_THROW(cuda::rms_norm(dx.get(), H, dw.get(), dy.get(), H, T, H, 1e-6f, nullptr, &rows), std::invalid_argument);
}

TEST(GpuHeadRmsNorm, StridedHeads) {
  const int64_t T = 11, heads = 8, D = 256;
  const auto x = random_bf16(size_t(T * heads * 2 * D), 6, 2.f), w = random_bf16(size_t(D), 7, 0.1f);
  DeviceBuffer<bf16> dx(x.bits), dw(w.bits), dy(size_t(T * heads * D));
  cuda::head_rms_norm(dx.get(), heads * 2 * D, 2 * D, dw.get(), dy.get(), heads * D, T, heads, D, 1e-6f, nullptr);
  std::vector<float> want(size_t(T * heads * D));
  cpu::head_rms_norm(x.values.data(), heads * 2 * D, 2 * D, w.values.data(), want.data(), heads * D, T, heads, D, 1e-6f);
  EXPECT_TRUE(all_close(to_float(dy.download()), want, 1e-2f, 1e-2f));
}

}  // namespace
}  // namespace ds::kernels
