#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/common.h"

using ds::kernels::bf16;
using ds::kernels::bf16_to_float;
using ds::kernels::float_to_bf16;

TEST(Bf16, ExactValuesRoundTrip) {
  for (float v : {0.f, 1.f, -2.f, 0.5f, 65536.f, -0.15625f}) EXPECT_EQ(bf16_to_float(float_to_bf16(v)), v);
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + std::ldexp(1.f, -8))), 1.f);
  // 1 + 3·2^-8 lies between 1 + 2^-7 and 1 + 2^-6: ties go up to the even one.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + 3 * std::ldexp(1.f, -8))), 1.f + std::ldexp(1.f, -6));
  EXPECT_EQ(float_to_bf16(1.f + std::ldexp(1.f, -7)).bits, 0x3f81);
}

TEST(Bf16, KeepsNaNAndInfinity) {
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
}
