// Internal: block-wise FP8 (E4M3) quantization, shared by the loader and gen-model.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ds::weights::detail {

inline constexpr float kF8E4M3Max = 448.f;

// Quantizes rows [row_begin, row_end) of a [batches][rows][cols] tensor into E4M3 codes `dst`
// (the whole tensor) and per-block scales scale_inv [batches][ceil(rows/br)][ceil(cols/bc)]
// (dequantized = code * scale_inv). `src` holds only those rows: [batches][row_end - row_begin][cols].
// row_begin must be a multiple of br, and row_end a multiple of br or equal to rows.
// scale_inv = amax / 448, or with power_of_two_scales the power of two at or above it (UE8M0-style
// scales): then every code · scale_inv is exact in BF16, so a BF16 copy of the dequantized
// weights holds exactly the FP8 weights.
void quantize_fp8_blocks(const float* src, int64_t batches, int64_t rows, int64_t cols, int block_rows, int block_cols,
                         int64_t row_begin, int64_t row_end, uint8_t* dst, float* scale_inv,
                         bool power_of_two_scales = false);

}  // namespace ds::weights::detail
