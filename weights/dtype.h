// Element types of checkpoint tensors (the safetensors set) and conversions between float types.
// Plain C++: the worker converts on load with these, the CPU backend dequantizes with them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ds::weights {

enum class DType : uint8_t { BF16, F16, F32, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, BOOL };

size_t dtype_size(DType dtype);             // bytes per element
std::string_view dtype_name(DType dtype);   // safetensors spelling: "BF16", "F8_E4M3", ...
bool is_float_dtype(DType dtype);           // BF16, F16, F32, F8_E4M3, F8_E5M2
// Safetensors spelling -> DType; nullopt for names we do not support (F64, U16, ...).
std::optional<DType> try_parse_dtype(std::string_view safetensors_name);
DType parse_dtype(std::string_view safetensors_name);  // throws std::invalid_argument naming it
// config.json spelling ("bfloat16", "float16", "float32") -> DType; throws naming it.
DType parse_torch_dtype(std::string_view torch_name);

// Scalar conversions (round to nearest even; NaN kept; FP8 E4M3 saturates to +-448, E5M2 to +-57344).
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float value);
float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);
float f8e4m3_to_float(uint8_t bits);
uint8_t float_to_f8e4m3(float value);
float f8e5m2_to_float(uint8_t bits);
uint8_t float_to_f8e5m2(float value);

// Converts `count` elements of any float dtype to fp32 / bf16 bits. Throws for non-float dtypes.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count);
void convert_to_bf16(DType src_dtype, const void* src, uint16_t* dst, size_t count);
// Converts between any two float dtypes (memcpy when equal).
void convert_float(DType src_dtype, const void* src, DType dst_dtype, void* dst, size_t count);

}  // namespace ds::weights
