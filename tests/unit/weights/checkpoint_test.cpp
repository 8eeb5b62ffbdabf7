// gen-model output loads back in every layout (single file and sharded); checkpoint-level
// errors name the tensor; dummy weights follow the rank contract.
#include "weights/checkpoint.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/unit/weights/test_util.h"
#include "weights/gen_model.h"
#include "weights/rank_weights.h"

namespace ds::weights {
namespace {

using testing::ScratchDir;
namespace fs = std::filesystem;

GenModelResult write(const ModelConfig& c, CheckpointLayout layout, const std::string& dir, uint64_t shard_bytes = 0,
                     bool fp8 = false) {
  GenModelOptions options;
  options.out_dir = dir;
  options.seed = 3;
  options.layout = layout;
  options.shard_bytes = shard_bytes;
  options.fp8 = fp8;
  return write_random_checkpoint(c, options);
}

std::string load_error(const std::string& dir) {
  try {
    const Checkpoint ck = Checkpoint::open(dir);
    load_rank_weights_host(ck, 0, 1, GdnProjectionForm::kFused);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Rewrites model.safetensors of `dir` through `edit` (which may drop, add or change tensors).
void rewrite(const ScratchDir& dir, const std::function<void(std::vector<TensorToWrite>&)>& edit) {
  std::vector<TensorToWrite> tensors;
  std::vector<std::byte> copy;
  {
    SafetensorsFile file(dir / "model.safetensors");
    size_t total = 0;
    for (const auto& t : file.tensors()) total += t.bytes.size();
    copy.reserve(total);
    for (const auto& t : file.tensors()) {
      const size_t at = copy.size();
      copy.insert(copy.end(), t.bytes.begin(), t.bytes.end());
      tensors.push_back({t.name, t.dtype, t.shape, std::span<const std::byte>(copy.data() + at, t.bytes.size())});
    }
  }
  edit(tensors);
  write_safetensors(dir / "model.safetensors", tensors);
}

TEST(Checkpoint, GenModelLoadsBackInEveryLayout) {
  struct Case {
    ModelConfig config;
    CheckpointLayout layout;
    uint64_t shard_bytes;
    bool fp8;
  };
  const std::vector<Case> cases = {
      {preset_config("tiny"), CheckpointLayout::kQwen35VL, 16 << 20, false},
      {testing::small_dense(), CheckpointLayout::kQwen35Text, 0, false},
      {testing::small_dense(), CheckpointLayout::kQwen3Next, 0, false},
      {testing::small_moe(), CheckpointLayout::kQwen35VL, 0, false},
      {testing::small_moe(), CheckpointLayout::kQwen35Text, 1 << 16, false},
      {testing::small_moe(), CheckpointLayout::kQwen3Next, 1 << 16, false},
      {testing::fp8_sized(false), CheckpointLayout::kQwen35VL, 1 << 20, true},
      {testing::fp8_sized(true), CheckpointLayout::kQwen3Next, 0, true},
  };
  for (const auto& tc : cases) {
    ScratchDir dir("genload");
    const GenModelResult result = write(tc.config, tc.layout, dir.str(), tc.shard_bytes, tc.fp8);
    SCOPED_TRACE(result.config.model_type + " files " + std::to_string(result.num_files));
    EXPECT_EQ(fs::exists(dir / "model.safetensors.index.json"), result.num_files > 1);
    if (tc.shard_bytes > 0) {
      EXPECT_GT(result.num_files, 1);
    }
    const Checkpoint ck = Checkpoint::open(dir.str());
    const ModelConfig& c = ck.config();
    EXPECT_EQ(c.model_type, result.config.model_type);
    EXPECT_EQ(c.hidden_size, tc.config.hidden_size);
    EXPECT_EQ(c.layer_types, tc.config.layer_types);
    EXPECT_EQ(c.tie_word_embeddings, tc.config.tie_word_embeddings);
    EXPECT_EQ(c.fp8.enabled, tc.fp8);
    EXPECT_EQ(c.num_experts, tc.config.num_experts);
    for (auto form : {GdnProjectionForm::kFused, GdnProjectionForm::kSplit}) {
      const auto tensors = load_rank_weights_host(ck, 0, 1, form);
      EXPECT_EQ(tensors.size(), rank_tensor_specs(c, 0, 1, form).size());
    }
  }
}

TEST(Checkpoint, PublishedNamesPerLayout) {
  ScratchDir vl("names_vl"), next("names_next");
  write(testing::small_moe(), CheckpointLayout::kQwen35VL, vl.str());
  write(testing::small_moe(), CheckpointLayout::kQwen3Next, next.str());
  std::set<std::string> vl_names, next_names;
  const SafetensorsFile vl_file(vl / "model.safetensors"), next_file(next / "model.safetensors");
  for (const auto& t : vl_file.tensors()) vl_names.insert(t.name);
  for (const auto& t : next_file.tensors()) next_names.insert(t.name);
  EXPECT_TRUE(vl_names.count("model.language_model.layers.0.linear_attn.in_proj_qkv.weight"));
  EXPECT_TRUE(vl_names.count("model.language_model.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_TRUE(vl_names.count("model.language_model.layers.0.linear_attn.conv1d.weight"));
  EXPECT_TRUE(vl_names.count("lm_head.weight"));
  EXPECT_TRUE(next_names.count("model.layers.0.linear_attn.in_proj_qkvz.weight"));
  EXPECT_TRUE(next_names.count("model.layers.0.linear_attn.in_proj_ba.weight"));
  EXPECT_TRUE(next_names.count("model.layers.0.mlp.experts.3.down_proj.weight"));
  nlohmann::json config = nlohmann::json::parse(std::ifstream(vl / "config.json"));
  EXPECT_EQ(config["model_type"], "qwen3_5_moe");
  EXPECT_EQ(config["text_config"]["model_type"], "qwen3_5_moe_text");
}

TEST(Checkpoint, SkipsVisualAndMtpTensorsAndToleratesTiedLmHead) {
  EXPECT_EQ(canonical_tensor_name("model.language_model.layers.0.mlp.gate.weight"), "layers.0.mlp.gate.weight");
  EXPECT_EQ(canonical_tensor_name("model.norm.weight"), "norm.weight");
  EXPECT_EQ(canonical_tensor_name("model.visual.blocks.0.attn.qkv.weight"), "");
  EXPECT_EQ(canonical_tensor_name("mtp.fc.weight"), "");
  EXPECT_EQ(canonical_tensor_name("lm_head.weight"), "lm_head.weight");
  ScratchDir dir("skip");
  ModelConfig c = testing::small_dense();
  c.tie_word_embeddings = true;
  write(c, CheckpointLayout::kQwen35VL, dir.str());
  std::vector<uint16_t> extra(4, 0), lm_head(c.vocab_size * c.hidden_size, 0);
  rewrite(dir, [&](std::vector<TensorToWrite>& tensors) {
    tensors.push_back({"lm_head.weight", DType::BF16, {c.vocab_size, c.hidden_size}, std::as_bytes(std::span(lm_head))});
    tensors.push_back({"model.visual.patch_embed.proj.weight", DType::BF16, {2, 2}, std::as_bytes(std::span(extra))});
    tensors.push_back({"mtp.layers.0.input_layernorm.weight", DType::BF16, {4}, std::as_bytes(std::span(extra))});
  });
  EXPECT_EQ(load_error(dir.str()), "");
}

TEST(Checkpoint, UnknownTensorIsAnErrorNamingIt) {
  ScratchDir dir("unknown");
  write(testing::small_dense(), CheckpointLayout::kQwen35Text, dir.str());
  std::vector<uint16_t> extra(4, 0);
  rewrite(dir, [&](std::vector<TensorToWrite>& tensors) {
    tensors.push_back({"model.layers.0.linear_attn.bonus.weight", DType::BF16, {4}, std::as_bytes(std::span(extra))});
  });
  const std::string error = load_error(dir.str());
  EXPECT_NE(error.find("layers.0.linear_attn.bonus.weight"), std::string::npos) << error;
  EXPECT_NE(error.find("does not use"), std::string::npos) << error;
}

TEST(Checkpoint, MissingTensorIsAnErrorNamingIt) {
  ScratchDir dir("missing");
  write(testing::small_dense(), CheckpointLayout::kQwen35Text, dir.str());
  rewrite(dir, [](std::vector<TensorToWrite>& tensors) {
    std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "model.layers.2.linear_attn.A_log"; });
  });
  const std::string error = load_error(dir.str());
  EXPECT_NE(error.find("missing tensor \"layers.2.linear_attn.A_log\""), std::string::npos) << error;
}

TEST(Checkpoint, WrongShapeIsAnErrorNamingIt) {
  ScratchDir dir("shape");
  write(testing::small_dense(), CheckpointLayout::kQwen35Text, dir.str());
  rewrite(dir, [](std::vector<TensorToWrite>& tensors) {
    for (auto& t : tensors) {
      if (t.name == "model.layers.0.self_attn.q_norm.weight" || t.name == "model.layers.3.self_attn.q_norm.weight") {
        t.shape = {t.shape[0] / 2, 2};
      }
    }
  });
  const std::string error = load_error(dir.str());
  EXPECT_NE(error.find("q_norm.weight\" has shape [8, 2]"), std::string::npos) << error;
}

TEST(Checkpoint, BrokenIndexIsAnErrorNamingTheFile) {
  ScratchDir dir("index");
  write(testing::small_dense(), CheckpointLayout::kQwen35Text, dir.str(), 1 << 16);
  std::string victim;
  for (const auto& entry : fs::directory_iterator(dir.str())) {
    if (entry.path().filename().string().find("model-00002") == 0) victim = entry.path().string();
  }
  ASSERT_FALSE(victim.empty());
  fs::remove(victim);
  try {
    Checkpoint::open(dir.str());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002"), std::string::npos) << e.what();
  }
  ScratchDir empty("empty");
  EXPECT_THROW(Checkpoint::open(empty.str()), std::runtime_error);
}

TEST(DummyWeights, FollowTheContractAndHaveRealisticScale) {
  ModelConfig c = preset_config("tiny");
  const auto a = dummy_rank_weights_host(c, 1, 2, GdnProjectionForm::kFused, 5);
  const auto b = dummy_rank_weights_host(c, 1, 2, GdnProjectionForm::kFused, 5);
  const auto specs = rank_tensor_specs(c, 1, 2, GdnProjectionForm::kFused);
  ASSERT_EQ(a.size(), specs.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].spec.name, specs[i].name);
    EXPECT_EQ(a[i].storage, b[i].storage) << "deterministic";
    std::vector<float> v(a[i].spec.numel());
    convert_to_f32(a[i].spec.dtype, a[i].data(), v.data(), v.size());
    double sum = 0, sq = 0;
    for (float x : v) {
      sum += x;
      sq += x * x;
    }
    const double mean = sum / v.size(), rms = std::sqrt(sq / v.size());
    const std::string& n = a[i].spec.name;
    if (n.ends_with("A_log")) {
      for (float x : v) EXPECT_TRUE(x >= 0.f && x <= std::log(16.f) + 1e-6f) << x;
    } else if (n.ends_with("linear_attn.norm")) {
      EXPECT_NEAR(mean, 1.0, 0.05) << n;
    } else if (n.ends_with("layernorm") || n == "norm" || n.ends_with("q_norm")) {
      EXPECT_NEAR(mean, 0.0, 0.05) << n;
    } else if (n.ends_with("o_proj") || n.ends_with("down_proj") || n.ends_with("in_proj")) {
      EXPECT_NEAR(rms, 1.0 / std::sqrt(static_cast<double>(a[i].spec.shape.back())), 0.2 * rms) << n;
    }
  }
  // Padded vocab rows are zero: rank 1 of 2 holds rows [Vp/2, Vp) of which the tail is padding.
  const RankDims d = rank_dims(c, 1, 2);
  const HostTensor& embed = a[0];
  ASSERT_EQ(embed.spec.name, "embed_tokens");
  const int64_t real = c.vocab_size - d.vocab_rows;
  const auto* values = embed.as<uint16_t>();
  for (int64_t i = real * c.hidden_size; i < d.vocab_rows * c.hidden_size; ++i) ASSERT_EQ(values[i], 0);
  EXPECT_NE(values[(real - 1) * c.hidden_size], 0);
}

TEST(DummyWeights, Fp8SpecsGetScales) {
  ModelConfig c = testing::fp8_sized(true);
  c.fp8.enabled = true;
  const auto t = dummy_rank_weights_host(c, 0, 2, GdnProjectionForm::kSplit, 1);
  std::map<std::string, const HostTensor*> by_name;
  for (const auto& x : t) by_name[x.spec.name] = &x;
  const HostTensor* w = by_name.at("layers.1.mlp.experts.down_proj");
  const HostTensor* s = by_name.at("layers.1.mlp.experts.down_proj_scale_inv");
  ASSERT_EQ(w->spec.dtype, DType::F8_E4M3);
  std::vector<float> dense(w->spec.numel());
  dequantize_fp8_blocks(*w, *s, 128, 128, dense.data());
  double sq = 0;
  for (float x : dense) sq += x * x;
  EXPECT_NEAR(std::sqrt(sq / dense.size()), 1.0 / std::sqrt(256.0), 0.02);
}

}  // namespace
}  // namespace ds::weights
