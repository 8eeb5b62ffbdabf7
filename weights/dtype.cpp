#include "weights/dtype.h"

#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ds::weights {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
  bool is_float;
};

constexpr std::array<DTypeInfo, 11> kDTypes = {{
    {DType::BF16, "BF16", 2, true},
    {DType::F16, "F16", 2, true},
    {DType::F32, "F32", 4, true},
    {DType::F8_E4M3, "F8_E4M3", 1, true},
    {DType::F8_E5M2, "F8_E5M2", 1, true},
    {DType::I8, "I8", 1, false},
    {DType::I16, "I16", 2, false},
    {DType::I32, "I32", 4, false},
    {DType::I64, "I64", 8, false},
    {DType::U8, "U8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  throw std::invalid_argument("invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

// A small IEEE-like float format: 1 sign bit, `exp_bits`, `mant_bits`, exponent bias `bias`.
struct MiniFloat {
  int exp_bits;
  int mant_bits;
  int bias;
  bool has_inf;        // all-ones exponent means inf/NaN (F16, E5M2); E4M3 uses it for normals
  bool saturate;       // out of range -> largest finite instead of inf
  uint32_t max_finite;  // code (without sign) of the largest finite value
  uint32_t nan_code;
};

constexpr MiniFloat kF16{5, 10, 15, true, false, 0x7bff, 0x7e00};
constexpr MiniFloat kE4M3{4, 3, 7, false, true, 0x7e, 0x7f};
constexpr MiniFloat kE5M2{5, 2, 15, true, true, 0x7b, 0x7e};

float decode(const MiniFloat& f, uint32_t code) {
  const uint32_t sign_bit = 1u << (f.exp_bits + f.mant_bits);
  const uint32_t exp_mask = (1u << f.exp_bits) - 1;
  const uint32_t mant_mask = (1u << f.mant_bits) - 1;
  const bool negative = (code & sign_bit) != 0;
  const uint32_t exponent = (code >> f.mant_bits) & exp_mask;
  const uint32_t mantissa = code & mant_mask;
  float value;
  if (f.has_inf && exponent == exp_mask) {
    value = mantissa == 0 ? INFINITY : NAN;
  } else if (!f.has_inf && (code & ~sign_bit) == f.nan_code) {
    value = NAN;
  } else if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), 1 - f.bias - f.mant_bits);
  } else {
    value = std::ldexp(static_cast<float>(mantissa | (1u << f.mant_bits)),
                       static_cast<int>(exponent) - f.bias - f.mant_bits);
  }
  return negative ? -value : value;
}

uint32_t encode(const MiniFloat& f, float value) {
  const uint32_t sign = std::signbit(value) ? 1u << (f.exp_bits + f.mant_bits) : 0u;
  if (std::isnan(value)) return sign | f.nan_code;
  const float magnitude = std::fabs(value);
  const float max_finite = decode(f, f.max_finite);
  const uint32_t overflow = f.saturate ? f.max_finite : (((1u << f.exp_bits) - 1) << f.mant_bits);
  if (std::isinf(magnitude)) return sign | overflow;
  const int min_normal_exp = 1 - f.bias;
  if (magnitude < std::ldexp(1.f, min_normal_exp)) {
    // Subnormal: an integer number of quanta; rounding to 2^mant_bits quanta gives the
    // smallest normal, whose code is the same integer.
    const float quanta = std::nearbyint(std::ldexp(magnitude, f.bias - 1 + f.mant_bits));
    return sign | static_cast<uint32_t>(quanta);
  }
  int exp2;
  const float fraction = std::frexp(magnitude, &exp2);  // magnitude = fraction * 2^exp2, fraction in [0.5, 1)
  int exponent = exp2 - 1;
  auto mantissa = static_cast<uint32_t>(std::nearbyint(std::ldexp(fraction, f.mant_bits + 1)));
  if (mantissa == (2u << f.mant_bits)) {
    mantissa >>= 1;
    ++exponent;
  }
  const uint32_t code = (static_cast<uint32_t>(exponent + f.bias) << f.mant_bits) | (mantissa & ((1u << f.mant_bits) - 1));
  if (exponent + f.bias >= (1 << f.exp_bits) || decode(f, code) > max_finite || code > f.max_finite) {
    return sign | overflow;
  }
  return sign | code;
}

template <typename T>
T load(const void* src, size_t index) {
  T value;
  std::memcpy(&value, static_cast<const std::byte*>(src) + index * sizeof(T), sizeof(T));
  return value;
}

float element_to_float(DType dtype, const void* src, size_t index) {
  switch (dtype) {
    case DType::BF16: return bf16_to_float(load<uint16_t>(src, index));
    case DType::F16: return f16_to_float(load<uint16_t>(src, index));
    case DType::F32: return load<float>(src, index);
    case DType::F8_E4M3: return f8e4m3_to_float(load<uint8_t>(src, index));
    case DType::F8_E5M2: return f8e5m2_to_float(load<uint8_t>(src, index));
    default: throw std::invalid_argument("convert: " + std::string(dtype_name(dtype)) + " is not a float dtype");
  }
}

void store_float(DType dtype, float value, void* dst, size_t index) {
  auto* out = static_cast<std::byte*>(dst);
  switch (dtype) {
    case DType::BF16: {
      uint16_t bits = float_to_bf16(value);
      std::memcpy(out + index * 2, &bits, 2);
      return;
    }
    case DType::F16: {
      uint16_t bits = float_to_f16(value);
      std::memcpy(out + index * 2, &bits, 2);
      return;
    }
    case DType::F32: std::memcpy(out + index * 4, &value, 4); return;
    case DType::F8_E4M3: out[index] = static_cast<std::byte>(float_to_f8e4m3(value)); return;
    case DType::F8_E5M2: out[index] = static_cast<std::byte>(float_to_f8e5m2(value)); return;
    default: throw std::invalid_argument("convert: " + std::string(dtype_name(dtype)) + " is not a float dtype");
  }
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
bool is_float_dtype(DType dtype) { return info(dtype).is_float; }

std::optional<DType> try_parse_dtype(std::string_view safetensors_name) {
  for (const auto& entry : kDTypes) {
    if (entry.name == safetensors_name) return entry.dtype;
  }
  return std::nullopt;
}

DType parse_dtype(std::string_view safetensors_name) {
  if (auto dtype = try_parse_dtype(safetensors_name)) return *dtype;
  throw std::invalid_argument("unsupported tensor dtype \"" + std::string(safetensors_name) +
                              "\" (supported: BF16, F16, F32, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, BOOL)");
}

DType parse_torch_dtype(std::string_view torch_name) {
  if (torch_name == "bfloat16") return DType::BF16;
  if (torch_name == "float16") return DType::F16;
  if (torch_name == "float32") return DType::F32;
  throw std::invalid_argument("unsupported model dtype \"" + std::string(torch_name) +
                              "\" (supported: bfloat16, float16, float32)");
}

float bf16_to_float(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_float(uint16_t bits) { return decode(kF16, bits); }
uint16_t float_to_f16(float value) { return static_cast<uint16_t>(encode(kF16, value)); }
float f8e4m3_to_float(uint8_t bits) { return decode(kE4M3, bits); }
uint8_t float_to_f8e4m3(float value) { return static_cast<uint8_t>(encode(kE4M3, value)); }
float f8e5m2_to_float(uint8_t bits) { return decode(kE5M2, bits); }
uint8_t float_to_f8e5m2(float value) { return static_cast<uint8_t>(encode(kE5M2, value)); }

void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count) {
  convert_float(src_dtype, src, DType::F32, dst, count);
}

void convert_to_bf16(DType src_dtype, const void* src, uint16_t* dst, size_t count) {
  convert_float(src_dtype, src, DType::BF16, dst, count);
}

void convert_float(DType src_dtype, const void* src, DType dst_dtype, void* dst, size_t count) {
  if (!is_float_dtype(src_dtype) || !is_float_dtype(dst_dtype)) {
    throw std::invalid_argument("convert_float: " + std::string(dtype_name(src_dtype)) + " -> " +
                                std::string(dtype_name(dst_dtype)) + " is not a float conversion");
  }
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, count * dtype_size(src_dtype));
    return;
  }
  if (src_dtype == DType::BF16 && dst_dtype == DType::F32) {  // the hot path: keep it tight
    const auto* in = static_cast<const uint16_t*>(src);
    auto* out = static_cast<float*>(dst);
    for (size_t i = 0; i < count; ++i) out[i] = bf16_to_float(in[i]);
    return;
  }
  for (size_t i = 0; i < count; ++i) store_float(dst_dtype, element_to_float(src_dtype, src, i), dst, i);
}

}  // namespace ds::weights
