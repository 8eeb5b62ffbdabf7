#include "kernels/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace ds::kernels {
namespace {

TEST(CpuSiluAndMul, HandChecked) {
  const std::vector<float> x = {0.f, 1.f, -2.f, 3.f, 4.f, 5.f, 99.f};  // T=1, I=3, ldx 7
  std::vector<float> y(3);
  cpu::silu_and_mul(x.data(), 7, y.data(), 3, 1, 3);
  EXPECT_FLOAT_EQ(y[0], 0.f);
  EXPECT_NEAR(y[1], 1.f / (1.f + std::exp(-1.f)) * 4.f, 1e-6);
  EXPECT_NEAR(y[2], -2.f / (1.f + std::exp(2.f)) * 5.f, 1e-6);
}

TEST(CpuEmbedding, VocabParallelShardZerosOutsideItsRows) {
  const std::vector<float> table = {1, 2, 3, 4, 5, 6};  // rows for ids 10, 11, 12; H = 2
  const std::vector<int32_t> ids = {11, 9, 12, 13, 10};
  std::vector<float> out(10, NAN);
  cpu::embedding_lookup(ids.data(), 5, table.data(), 10, 3, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{3, 4, 0, 0, 5, 6, 0, 0, 1, 2}));
}

TEST(CpuAddInplace, Adds) {
  std::vector<float> y = {1, 2}, x = {10, 20};
  cpu::add_inplace(y.data(), x.data(), 2);
  EXPECT_EQ(y, (std::vector<float>{11, 22}));
}

}  // namespace
}  // namespace ds::kernels
