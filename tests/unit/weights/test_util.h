// Shared helpers of the weights unit tests: scratch folders and small model configs.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "weights/model_config.h"

namespace ds::weights::testing {

// A fresh folder under the system temp dir, removed with the object.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("ds_weights_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path path_;
};

// Dense Qwen3.5-architecture config small enough to shard over `heads`-divisible TP sizes.
inline ModelConfig small_dense(int heads_unit = 4) {
  ModelConfig c = preset_config("tiny");
  c.vocab_size = 1000;
  c.hidden_size = 64;
  c.num_attention_heads = heads_unit;
  c.num_key_value_heads = heads_unit / 2 > 0 ? heads_unit / 2 : 1;
  c.head_dim = 16;
  c.linear_num_key_heads = heads_unit;
  c.linear_num_value_heads = 2 * heads_unit;
  c.linear_key_head_dim = 8;
  c.linear_value_head_dim = 8;
  c.intermediate_size = 32 * heads_unit;
  c.num_hidden_layers = 4;
  c.layer_types.assign(4, LayerType::kLinearAttention);
  c.layer_types[3] = LayerType::kFullAttention;
  c.tie_word_embeddings = false;
  return c;
}

inline ModelConfig small_moe(int heads_unit = 4) {
  ModelConfig c = small_dense(heads_unit);
  c.model_type = "qwen3_5_moe";
  c.intermediate_size = 0;
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 16 * heads_unit;
  c.shared_expert_intermediate_size = 16 * heads_unit;
  return c;
}

// Dims that are multiples of the 128x128 FP8 blocks for TP 1, 2 and 4.
inline ModelConfig fp8_sized(bool moe) {
  ModelConfig c = moe ? small_moe(4) : small_dense(4);
  c.hidden_size = 256;
  c.head_dim = 128;
  c.linear_key_head_dim = 128;
  c.linear_value_head_dim = 128;
  if (moe) {
    c.moe_intermediate_size = 512;
    c.shared_expert_intermediate_size = 512;
  } else {
    c.intermediate_size = 512;
  }
  return c;
}

}  // namespace ds::weights::testing
