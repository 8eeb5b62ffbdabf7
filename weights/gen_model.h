// Writes a complete checkpoint folder (config.json, safetensors, index when sharded, tokenizer
// files when available) with random weights, in one of the published on-disk layouts.
#pragma once

#include <cstdint>
#include <string>

#include "weights/dtype.h"
#include "weights/model_config.h"

namespace ds::weights {

enum class CheckpointLayout {
  kQwen35Text,  // "qwen3.5": flat qwen3_5_text / qwen3_5_moe_text config, names model.*
  kQwen35VL,    // "qwen3.5-vl": composite qwen3_5 / qwen3_5_moe config (text_config), names model.language_model.*
  kQwen3Next,   // "qwen3-next": qwen3_next config, interleaved in_proj_qkvz/ba, per-expert experts.{e}.*_proj
};
CheckpointLayout parse_checkpoint_layout(const std::string& name);  // "qwen3.5" | "qwen3.5-vl" | "qwen3-next"
CheckpointLayout default_layout(const ModelConfig& config);         // qwen3-next for qwen3_next, else qwen3.5-vl

struct GenModelOptions {
  std::string out_dir;
  uint64_t seed = 0;
  CheckpointLayout layout = CheckpointLayout::kQwen35VL;
  bool fp8 = false;               // block FP8 (128x128) for the linear weights, like the published -FP8 models
                                  // (with power-of-two scales, so that the dequantized twin is exact in BF16)
  uint64_t shard_bytes = 0;       // 0: one model.safetensors; else shards of at most this size + index
  std::string tokenizer_dir;      // copied when it holds tokenizer.json; empty: none
};

struct GenModelResult {
  ModelConfig config;  // as written (and as parse_model_config reads it back)
  uint64_t total_bytes = 0;
  int num_files = 0;
};

// The same seed gives the same logical weights in every layout (the layouts only differ in how
// they store them), so checkpoints of different layouts load into identical rank tensors.
GenModelResult write_random_checkpoint(const ModelConfig& config, const GenModelOptions& options);

// Writes `out_dir`, the dequantized twin of the block-FP8 checkpoint in `fp8_dir`: every FP8
// weight replaced by code · weight_scale_inv of its block, stored as `dtype` (F32: exact; BF16:
// exact for gen-model's power-of-two scales, rounded once for others), the "_scale_inv" tensors
// and quantization_config dropped, every other tensor and file name as stored (config.json's dtype
// becomes `dtype`, so the loader keeps F32 as F32). It holds the FP8 checkpoint's weights
// unquantized: the reference of the FP8 paths.
void write_dequantized_twin(const std::string& fp8_dir, const std::string& out_dir, DType dtype);

// The tokenizer folder shipped with deltaserve: $DELTASERVE_DATA_DIR/tokenizer/qwen3, else
// data/tokenizer/qwen3 next to or above the executable; empty when none is found.
std::string find_tokenizer_dir();

}  // namespace ds::weights
