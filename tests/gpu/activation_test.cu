// SiLU-and-mul, vocab-parallel embedding, residual add and conversions against the CPU reference.
#include <vector>

#include "kernels/activation.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/kernels_test_util.h"

namespace ds::kernels {
namespace {

using testing_util::all_close;
using testing_util::DeviceBuffer;
using testing_util::random_bf16;
using testing_util::to_float;

TEST(GpuSiluAndMul, StridedRows) {
  const int64_t T = 29, I = 1000, ldx = 2 * I + 8, ldy = I + 4;
  const auto x = random_bf16(size_t(T * ldx), 1, 2.f);
  DeviceBuffer<bf16> dx(x.bits), dy(size_t(T * ldy));
  cuda::silu_and_mul(dx.get(), ldx, dy.get(), ldy, T, I, nullptr);
  std::vector<float> want(size_t(T * ldy), NAN);
  cpu::silu_and_mul(x.values.data(), ldx, want.data(), ldy, T, I);
  const auto got = to_float(dy.download());
  for (int64_t t = 0; t < T; ++t) {
    ASSERT_TRUE(all_close(std::vector<float>(got.begin() + t * ldy, got.begin() + t * ldy + I),
                          std::vector<float>(want.begin() + t * ldy, want.begin() + t * ldy + I), 1e-2f, 1e-2f));
  }
}

// With FP8 output (kernels::Fp8Rows, for down_proj's W8A8 GEMM): the same BF16 bits as without, and
// the FP8 rows exactly their quantization; I must be a whole number of 128-groups.
TEST(GpuSiluAndMul, Fp8OutputIsTheQuantizedOutput) {
  const int64_t T = 9, I = 1536, ldx = 2 * I + 8, ldy = I + 8;
  const auto x = random_bf16(size_t(T * ldx), 11, 2.f);
  DeviceBuffer<bf16> dx(x.bits), dy(size_t(T * ldy)), dy_plain(size_t(T * ldy));
  testing_util::DeviceFp8Rows fp8(T, I);
  const Fp8Rows rows = fp8.rows();
  cuda::silu_and_mul(dx.get(), ldx, dy.get(), ldy, T, I, nullptr, &rows);
  cuda::silu_and_mul(dx.get(), ldx, dy_plain.get(), ldy, T, I, nullptr);
  const auto y = dy.download(), y_plain = dy_plain.download();
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < I; ++i) ASSERT_EQ(y[size_t(t * ldy + i)].bits, y_plain[size_t(t * ldy + i)].bits);
  }
  EXPECT_TRUE(testing_util::fp8_rows_quantize(fp8, y, ldy));
  EXPECT_THROW(cuda::silu_and_mul(dx.get(), ldx, dy.get(), ldy, T, 1000, nullptr, &rows), std::invalid_argument);
}

TEST(GpuEmbedding, ShardRowsAndZeros) {
  for (int64_t H : {1024, 100}) {
    const int64_t rows = 500, start = 1000, T = 64;
    const auto table = random_bf16(size_t(rows * H), 2);
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(900 + t * 13);  // some below, inside, above
    DeviceBuffer<bf16> dtable(table.bits), dout(size_t(T * H));
    DeviceBuffer<int32_t> dids(ids);
    cuda::embedding_lookup(dids.get(), T, dtable.get(), start, rows, H, dout.get(), nullptr);
    std::vector<float> want(size_t(T * H));
    cpu::embedding_lookup(ids.data(), T, table.values.data(), start, rows, H, want.data());
    EXPECT_TRUE(all_close(to_float(dout.download()), want, 0.f, 0.f)) << "H=" << H;
  }
}

TEST(GpuElementwise, AddAndConversions) {
  const int64_t n = 100003;
  const auto a = random_bf16(size_t(n), 3), b = random_bf16(size_t(n), 4);
  DeviceBuffer<bf16> da(a.bits), db(b.bits), dc(static_cast<size_t>(n));
  cuda::add_inplace(da.get(), db.get(), n, nullptr);
  std::vector<float> want(static_cast<size_t>(n));
  for (size_t i = 0; i < want.size(); ++i) want[i] = bf16_to_float(float_to_bf16(a.values[i] + b.values[i]));
  EXPECT_TRUE(all_close(to_float(da.download()), want, 0.f, 0.f));
  DeviceBuffer<float> df(static_cast<size_t>(n));
  cuda::bf16_to_float(db.get(), df.get(), n, nullptr);
  EXPECT_TRUE(all_close(df.download(), b.values, 0.f, 0.f));
  cuda::float_to_bf16(df.get(), dc.get(), n, nullptr);
  EXPECT_TRUE(all_close(to_float(dc.download()), b.values, 0.f, 0.f));
}

}  // namespace
}  // namespace ds::kernels
