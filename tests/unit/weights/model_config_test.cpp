#include "weights/model_config.h"

#include <gtest/gtest.h>

#include <map>

#include <nlohmann/json.hpp>

#include "weights/rank_weights.h"

namespace ds::weights {
namespace {

using nlohmann::json;

// Qwen3.5-27B's config.json as published (text part abridged to what the model reads).
json qwen35_27b() {
  return json::parse(R"({
    "architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
    "image_token_id": 248056, "tie_word_embeddings": false, "eos_token_id": 248046,
    "text_config": {
      "model_type": "qwen3_5_text", "attention_bias": false, "attn_output_gate": true, "dtype": "bfloat16",
      "eos_token_id": 248044, "full_attention_interval": 4, "head_dim": 256, "hidden_act": "silu",
      "hidden_size": 5120, "intermediate_size": 17408, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
      "linear_num_key_heads": 16, "linear_num_value_heads": 48, "linear_value_head_dim": 128,
      "max_position_embeddings": 262144, "mlp_only_layers": [], "num_attention_heads": 24, "num_hidden_layers": 64,
      "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "vocab_size": 248320, "tie_word_embeddings": true,
      "rope_parameters": {"mrope_interleaved": true, "mrope_section": [11, 11, 10], "rope_type": "default",
                          "rope_theta": 10000000, "partial_rotary_factor": 0.25}
    },
    "vision_config": {"depth": 27}
  })");
}

json qwen3_next() {
  return json::parse(R"({
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "torch_dtype": "bfloat16",
    "decoder_sparse_step": 1, "eos_token_id": 151645, "full_attention_interval": 4, "head_dim": 256,
    "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 5120, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_value_head_dim": 128,
    "max_position_embeddings": 262144, "mlp_only_layers": [], "moe_intermediate_size": 512, "norm_topk_prob": true,
    "num_attention_heads": 16, "num_experts": 512, "num_experts_per_tok": 10, "num_hidden_layers": 48,
    "num_key_value_heads": 2, "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06, "rope_scaling": null,
    "rope_theta": 10000000, "shared_expert_intermediate_size": 512, "tie_word_embeddings": false, "vocab_size": 151936
  })");
}

ModelConfig parse(const json& j) { return parse_model_config_text(j.dump(), "config.json"); }

std::string error_of(const json& j) {
  try {
    parse(j);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, CompositeQwen35) {
  const ModelConfig c = parse(qwen35_27b());
  EXPECT_EQ(c.model_type, "qwen3_5");
  EXPECT_EQ(c.gdn_layout, GdnCheckpointLayout::kSeparate);
  EXPECT_EQ(c.hidden_size, 5120);
  EXPECT_EQ(c.num_hidden_layers, 64);
  EXPECT_EQ(c.layer_types[2], LayerType::kLinearAttention);
  EXPECT_EQ(c.layer_types[3], LayerType::kFullAttention);
  EXPECT_EQ(c.num_layers_of(LayerType::kFullAttention), 16);
  EXPECT_FALSE(c.tie_word_embeddings);  // the top-level value wins over text_config's
  EXPECT_EQ(c.rotary_dim(), 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e7);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{248044, 248046}));
  EXPECT_FALSE(c.is_moe());
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_FALSE(c.fp8.enabled);
}

TEST(ModelConfig, Qwen3NextFlatWithTopLevelRope) {
  const ModelConfig c = parse(qwen3_next());
  EXPECT_EQ(c.gdn_layout, GdnCheckpointLayout::kInterleaved);
  EXPECT_TRUE(c.is_moe());
  EXPECT_TRUE(c.layer_is_moe(0));
  EXPECT_EQ(c.num_experts, 512);
  EXPECT_EQ(c.shared_expert_intermediate_size, 512);
  EXPECT_EQ(c.layer_types[47], LayerType::kFullAttention);
  EXPECT_DOUBLE_EQ(c.partial_rotary_factor, 0.25);
}

TEST(ModelConfig, MlpOnlyLayersAndSparseStep) {
  json j = qwen3_next();
  j["mlp_only_layers"] = {0};
  j["decoder_sparse_step"] = 2;
  const ModelConfig c = parse(j);
  EXPECT_FALSE(c.layer_is_moe(0));
  EXPECT_TRUE(c.layer_is_moe(1));
  EXPECT_FALSE(c.layer_is_moe(2));
}

TEST(ModelConfig, ExplicitLayerTypesAndFp8) {
  json j = qwen35_27b();
  j["text_config"]["num_hidden_layers"] = 2;
  j["text_config"]["layer_types"] = {"full_attention", "linear_attention"};
  j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                              {"weight_block_size", {128, 128}},
                              {"modules_to_not_convert", {"lm_head", "model.language_model.layers.1.linear_attn.in_proj_b"}}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.layer_types[0], LayerType::kFullAttention);
  EXPECT_TRUE(c.fp8.enabled);
  EXPECT_EQ(c.fp8.block_rows, 128);
  EXPECT_EQ(c.fp8.modules_to_not_convert.size(), 2u);
}

TEST(ModelConfig, ClearErrors) {
  json j = qwen35_27b();
  j["model_type"] = "llama";
  EXPECT_NE(error_of(j).find("unsupported \"llama\""), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"].erase("hidden_size");
  EXPECT_NE(error_of(j).find("text_config.hidden_size: missing"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"]["rope_parameters"]["rope_type"] = "yarn";
  EXPECT_NE(error_of(j).find("yarn"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["quantization_config"] = {{"quant_method", "gptq"}};
  EXPECT_NE(error_of(j).find("quant_method"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"].erase("full_attention_interval");
  EXPECT_NE(error_of(j).find("layer_types"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"]["layer_types"] = {"linear_attention"};
  EXPECT_NE(error_of(j).find("1 entries for 64 layers"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"].erase("dtype");
  EXPECT_NE(error_of(j).find("dtype"), std::string::npos) << error_of(j);

  j = qwen35_27b();
  j["text_config"]["hidden_size"] = "big";
  EXPECT_NE(error_of(j).find("expected an integer"), std::string::npos) << error_of(j);

  EXPECT_THROW(parse_model_config_text("{not json", "config.json"), std::runtime_error);
  EXPECT_THROW(parse_model_config("/nonexistent/config.json"), std::runtime_error);
}

TEST(ModelConfig, Presets) {
  for (const auto& name : preset_names()) {
    const ModelConfig c = preset_config(name);
    EXPECT_EQ(static_cast<int>(c.layer_types.size()), c.num_hidden_layers) << name;
    EXPECT_NO_THROW(rank_dims(c, 0, 1)) << name;
  }
  const ModelConfig tiny = preset_config("tiny");
  EXPECT_EQ(tiny.hidden_size, 256);
  EXPECT_EQ(tiny.num_hidden_layers, 8);
  EXPECT_EQ(tiny.num_layers_of(LayerType::kLinearAttention), 6);
  EXPECT_EQ(tiny.vocab_size, 151936);
  EXPECT_TRUE(tiny.tie_word_embeddings);
  EXPECT_EQ(preset_config("qwen3.5-397b-a17b").num_experts, 512);
  EXPECT_EQ(preset_config("qwen3-next-80b-a3b").gdn_layout, GdnCheckpointLayout::kInterleaved);
  EXPECT_THROW(preset_config("qwen9"), std::invalid_argument);
}

// The -fp8 presets: every linear in E4M3 with its 128×128 scales but lm_head and the GDN b/a
// projection, as in the published -FP8 checkpoints.
TEST(ModelConfig, Fp8PresetsQuantizeLikeThePublishedCheckpoints) {
  EXPECT_FALSE(preset_config("qwen3.5-9b").fp8.enabled);
  const ModelConfig c = preset_config("qwen3.5-9b-fp8");
  EXPECT_TRUE(c.fp8.enabled);
  std::map<std::string, DType> dtypes;
  for (const TensorSpec& s : rank_tensor_specs(c, 0, 1, GdnProjectionForm::kSplit)) dtypes[s.name] = s.dtype;
  EXPECT_EQ(dtypes.at("layers.3.self_attn.q_proj"), DType::F8_E4M3);
  EXPECT_EQ(dtypes.at("layers.3.self_attn.q_proj_scale_inv"), DType::F32);
  EXPECT_EQ(dtypes.at("layers.0.linear_attn.out_proj"), DType::F8_E4M3);
  EXPECT_EQ(dtypes.at("layers.0.mlp.down_proj"), DType::F8_E4M3);
  EXPECT_EQ(dtypes.at("layers.0.linear_attn.in_proj_ba"), DType::BF16);
  EXPECT_EQ(dtypes.at("lm_head"), DType::BF16);
  EXPECT_EQ(preset_config("qwen3.5-35b-a3b-fp8").num_experts, 256);
  // Qwen3-Next: interleaved in_proj_qkvz / in_proj_ba, MoE experts and shared expert.
  const ModelConfig next = preset_config("qwen3-next-80b-a3b-fp8");
  std::map<std::string, DType> next_dtypes;
  for (const TensorSpec& s : rank_tensor_specs(next, 0, 4, GdnProjectionForm::kSplit)) next_dtypes[s.name] = s.dtype;
  EXPECT_EQ(next_dtypes.at("layers.0.linear_attn.in_proj_ba"), DType::BF16);
  EXPECT_EQ(next_dtypes.at("layers.0.mlp.experts.down_proj"), DType::F8_E4M3);
  EXPECT_EQ(next_dtypes.at("layers.0.mlp.gate"), DType::BF16);
  EXPECT_THROW(preset_config("-fp8"), std::invalid_argument);
  EXPECT_THROW(preset_config("qwen9-fp8"), std::invalid_argument);
}

TEST(ModelConfig, RankDims) {
  const ModelConfig c = preset_config("qwen3.5-27b");
  const RankDims d = rank_dims(c, 1, 8);
  EXPECT_EQ(d.q_heads, 3);
  EXPECT_EQ(d.kv_heads, 1);
  EXPECT_EQ(d.first_kv_head, 0);  // 8 ranks share 4 KV heads: ranks 0,1 -> head 0
  EXPECT_EQ(d.key_heads, 2);
  EXPECT_EQ(d.value_heads, 6);
  EXPECT_EQ(d.conv_dim, 2 * 256 + 768);
  EXPECT_EQ(d.in_proj_rows, d.conv_dim + 768 + 12);
  EXPECT_EQ(d.vocab_padded % (64 * 8), 0);
  EXPECT_EQ(rank_dims(c, 7, 8).first_kv_head, 3);
  try {
    rank_dims(c, 0, 5);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rank_dims(c, 0, 3), std::invalid_argument);  // 4 KV heads
}

}  // namespace
}  // namespace ds::weights
