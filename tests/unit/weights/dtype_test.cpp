#include "weights/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace ds::weights {
namespace {

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(parse_dtype("F8_E4M3"), DType::F8_E4M3);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  EXPECT_EQ(dtype_name(DType::BF16), "BF16");
  EXPECT_FALSE(try_parse_dtype("F64").has_value());
  EXPECT_THROW(parse_dtype("F64"), std::invalid_argument);
  EXPECT_EQ(parse_torch_dtype("bfloat16"), DType::BF16);
  EXPECT_THROW(parse_torch_dtype("float64"), std::invalid_argument);
}

TEST(DType, E4M3ExactValuesAndSaturation) {
  EXPECT_EQ(f8e4m3_to_float(0x7e), 448.f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7f)));
  EXPECT_EQ(f8e4m3_to_float(0x01), std::ldexp(1.f, -9));  // smallest subnormal
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.f);
  EXPECT_EQ(float_to_f8e4m3(1.f), 0x38);
  EXPECT_EQ(float_to_f8e4m3(1000.f), 0x7e);   // saturates
  EXPECT_EQ(float_to_f8e4m3(-1000.f), 0xfe);
  EXPECT_EQ(float_to_f8e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  // 1.0625 lies halfway between 1 and 1.125: ties go to the even mantissa.
  EXPECT_EQ(f8e4m3_to_float(float_to_f8e4m3(1.0625f)), 1.f);
  EXPECT_EQ(f8e4m3_to_float(float_to_f8e4m3(1.1875f)), 1.25f);
  for (int code = 0; code < 256; ++code) {
    const float v = f8e4m3_to_float(static_cast<uint8_t>(code));
    if (!std::isnan(v)) {
      EXPECT_EQ(f8e4m3_to_float(float_to_f8e4m3(v)), v) << code;
    }
  }
}

TEST(DType, E5M2AndF16RoundTripEveryCode) {
  for (int code = 0; code < 256; ++code) {
    const float v = f8e5m2_to_float(static_cast<uint8_t>(code));
    if (!std::isnan(v) && !std::isinf(v)) {
      EXPECT_EQ(f8e5m2_to_float(float_to_f8e5m2(v)), v) << code;
    }
  }
  EXPECT_EQ(f8e5m2_to_float(0x7b), 57344.f);
  for (int code = 0; code < 65536; code += 7) {
    const float v = f16_to_float(static_cast<uint16_t>(code));
    if (!std::isnan(v)) {
      EXPECT_EQ(float_to_f16(v), code) << code;
    }
  }
  EXPECT_EQ(f16_to_float(float_to_f16(1e6f)), std::numeric_limits<float>::infinity());
}

TEST(DType, ConvertSpans) {
  const std::vector<float> values = {0.f, 1.5f, -2.25f, 3.f};
  std::vector<uint16_t> bf16(values.size());
  convert_float(DType::F32, values.data(), DType::BF16, bf16.data(), values.size());
  std::vector<float> back(values.size());
  convert_to_f32(DType::BF16, bf16.data(), back.data(), back.size());
  EXPECT_EQ(back, values);
  std::vector<uint16_t> again(values.size());
  convert_to_bf16(DType::BF16, bf16.data(), again.data(), again.size());
  EXPECT_EQ(again, bf16);
  int32_t ints[2] = {1, 2};
  EXPECT_THROW(convert_to_f32(DType::I32, ints, back.data(), 2), std::invalid_argument);
}

}  // namespace
}  // namespace ds::weights
