// Block-FP8 checkpoints (gen-model --fp8) in the CPU model: equal to their dequantized fp32 twin
// (weights::write_dequantized_twin: every FP8 weight replaced by fp8 · scale_inv) and to its BF16
// twin (the GPU test's reference; exact thanks to gen-model's power-of-two scales), and close to
// the BF16 checkpoint of the same seed (which differs by the FP8 rounding of the weights).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/worker/model_fixture_util.h"
#include "weights/checkpoint.h"
#include "weights/gen_model.h"
#include "weights/model_config.h"
#include "weights/rank_weights.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {
namespace {

std::string temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "ds_model_fp8_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

std::unique_ptr<ModelRunner> runner_for(const std::string& dir, const std::string& projection) {
  RunnerOptions options;
  options.model_dir = dir;
  options.gdn_projection = projection;
  options.device = "cpu";
  options.kv_page_size = kPageSize;
  options.max_num_batched_tokens = 64;
  auto runner = ModelRunner::create(options);
  runner->allocate_pools(kNumKvPages, kMaxSeqs + 1);
  return runner;
}

TEST(ModelFp8, Fp8CheckpointEqualsItsDequantizedTwin) {
  weights::ModelConfig config = weights::preset_config("tiny");
  config.vocab_size = 1024;  // keeps the two checkpoints small
  const std::string root = temp_dir();
  for (bool fp8 : {false, true}) {
    weights::GenModelOptions options;
    options.out_dir = root + (fp8 ? "/fp8" : "/bf16");
    options.seed = 5;
    options.fp8 = fp8;
    weights::write_random_checkpoint(config, options);
  }
  weights::write_dequantized_twin(root + "/fp8", root + "/twin", weights::DType::F32);
  weights::write_dequantized_twin(root + "/fp8", root + "/twin_bf16", weights::DType::BF16);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 11; ++i) prompt.push_back((i * 37 + 3) % 1000);
  auto run = [&](const std::string& name, const std::string& form) {
    auto runner = runner_for(root + "/" + name, form);
    std::vector<Driver> drivers{make_driver(0, prompt, 1 << 20, 4)};
    run_drivers(*runner, drivers, {0});
    return drivers[0];
  };
  const int64_t vocab = config.vocab_size;
  // Both GDN projection forms load exactly the stored weights (the fused W_in keeps the BF16 b/a
  // rows apart from its FP8 rows: weights/rank_weights.h).
  std::map<std::string, Driver> runs;
  for (const char* form : {"split", "fused"}) {
    SCOPED_TRACE(form);
    for (const char* name : {"fp8", "twin", "twin_bf16"}) runs.insert_or_assign(name, run(name, form));
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(runs.at("fp8").generated[k], runs.at("twin").generated[k]) << "token " << k;
      EXPECT_LT(relative_error(runs.at("fp8").logits[k].data(), runs.at("twin").logits[k].data(), vocab), 1e-5)
          << "token " << k;
      // gen-model's power-of-two scales make the BF16 twin (the GPU test's reference) exact.
      EXPECT_EQ(runs.at("twin_bf16").logits[k], runs.at("twin").logits[k]) << "token " << k;
    }
  }
  runs.emplace("bf16", run("bf16", "fused"));
  const double rounding = relative_error(runs.at("fp8").logits[0].data(), runs.at("bf16").logits[0].data(), vocab);
  std::printf("FP8 vs BF16 checkpoint of the same seed: first-token logits max relative difference %.3e\n", rounding);
  EXPECT_GT(rounding, 1e-3) << "the FP8 weights should differ from the BF16 ones by their rounding";
  EXPECT_LT(rounding, 1.0);
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(root);
}

// What the CUDA backend uploads as is: every rank's FP8 tensors with their scale blocks, at TP 1, 2
// and 4, in both GDN projection forms, dequantize exactly to the twin's rank tensors (the shards
// follow the 128-blocks and carry their own scales).
TEST(ModelFp8, RankShardsOfFp8WeightsDequantizeToTheTwinsShards) {
  weights::ModelConfig config = weights::preset_config("tiny");
  config.vocab_size = 1024;
  const std::string root = temp_dir();
  weights::GenModelOptions options;
  options.out_dir = root + "/fp8";
  options.seed = 7;
  options.fp8 = true;
  weights::write_random_checkpoint(config, options);
  weights::write_dequantized_twin(root + "/fp8", root + "/twin", weights::DType::BF16);
  const weights::Checkpoint fp8 = weights::Checkpoint::open(root + "/fp8");
  const weights::Checkpoint twin = weights::Checkpoint::open(root + "/twin");
  for (auto form : {weights::GdnProjectionForm::kFused, weights::GdnProjectionForm::kSplit}) {
    for (int world : {1, 2, 4}) {
      for (int rank = 0; rank < world; ++rank) {
        const auto q = weights::load_rank_weights_host(fp8, rank, world, form);
        const auto t = weights::load_rank_weights_host(twin, rank, world, form);
        std::map<std::string, const weights::HostTensor*> fp8_by_name, twin_by_name;
        for (const auto& tensor : q) fp8_by_name[tensor.spec.name] = &tensor;
        for (const auto& tensor : t) twin_by_name[tensor.spec.name] = &tensor;
        size_t fp8_tensors = 0;
        for (const auto& actual : q) {
          const std::string& name = actual.spec.name;
          if (name.ends_with("_scale_inv")) continue;
          SCOPED_TRACE(name + " rank " + std::to_string(rank) + "/" + std::to_string(world));
          // The fused FP8 W_in keeps its BF16 b/a rows apart as in_proj_ba; the twin's W_in holds
          // them as its last rows (and its first rows are the FP8 in_proj's).
          const bool ba_of_w_in = name.ends_with("linear_attn.in_proj_ba") && twin_by_name.count(name) == 0;
          const weights::HostTensor& expected = *twin_by_name.at(ba_of_w_in ? name.substr(0, name.size() - 3) : name);
          std::vector<float> a(static_cast<size_t>(actual.spec.numel())), e(static_cast<size_t>(expected.spec.numel()));
          if (actual.spec.dtype == weights::DType::F8_E4M3) {
            ++fp8_tensors;
            weights::dequantize_fp8_blocks(actual, *fp8_by_name.at(name + "_scale_inv"), 128, 128, a.data());
          } else {
            weights::convert_to_f32(actual.spec.dtype, actual.data(), a.data(), a.size());
          }
          weights::convert_to_f32(expected.spec.dtype, expected.data(), e.data(), e.size());
          if (!ba_of_w_in && !name.ends_with("linear_attn.in_proj")) {
            ASSERT_EQ(a.size(), e.size());
          }
          ASSERT_LE(a.size(), e.size());
          const size_t offset = ba_of_w_in ? e.size() - a.size() : 0;
          ASSERT_TRUE(std::equal(a.begin(), a.end(), e.begin() + offset));
          if (ba_of_w_in) {  // and the two parts are the whole of the twin's W_in, no row missing
            const std::string w_in = name.substr(0, name.size() - 3);
            EXPECT_EQ(fp8_by_name.at(w_in)->spec.numel() + actual.spec.numel(), expected.spec.numel());
          }
        }
        EXPECT_GT(fp8_tensors, 0u);
      }
    }
  }
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace ds::worker::testing
