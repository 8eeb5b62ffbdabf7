// Block-FP8 checkpoints (gen-model --fp8) in the CPU model: equal to their dequantized fp32 twin
// (the same checkpoint with every FP8 weight replaced by fp8 · scale_inv, written here), and close
// to the BF16 checkpoint of the same seed (which differs by the FP8 rounding of the weights).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "weights/rank_weights.h"
#include "weights/safetensors.h"

#include "tests/unit/worker/model_fixture_util.h"
#include "weights/gen_model.h"
#include "weights/model_config.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {
namespace {

std::string temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "ds_model_fp8_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

weights::HostTensor host_copy(const weights::TensorView& view) {
  weights::HostTensor tensor;
  tensor.spec = weights::TensorSpec{view.name, view.dtype, view.shape};
  tensor.storage.assign(view.bytes.begin(), view.bytes.end());
  return tensor;
}

// Writes `twin` = `fp8_dir` with FP8 weights dequantized to F32, dtype float32 and no
// quantization_config.
void write_dequantized_twin(const std::string& fp8_dir, const std::string& twin) {
  std::filesystem::create_directories(twin);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(fp8_dir + "/config.json"));
  const auto& quant = config.at("quantization_config");
  const int block_rows = quant.at("weight_block_size")[0];
  const int block_cols = quant.at("weight_block_size")[1];
  config.erase("quantization_config");
  // Else the loader would round the dequantized values to BF16.
  config["dtype"] = "float32";
  if (config.contains("text_config")) config["text_config"]["dtype"] = "float32";
  std::ofstream(twin + "/config.json") << config.dump(2);

  const weights::SafetensorsFile file(fp8_dir + "/model.safetensors");
  std::map<std::string, const weights::TensorView*> by_name;
  for (const auto& view : file.tensors()) by_name[view.name] = &view;
  std::vector<std::vector<float>> values;
  std::vector<weights::TensorToWrite> out;
  for (const auto& view : file.tensors()) {
    if (view.name.ends_with("_scale_inv")) continue;
    values.emplace_back(static_cast<size_t>(view.numel()));
    if (view.dtype == weights::DType::F8_E4M3) {
      weights::dequantize_fp8_blocks(host_copy(view), host_copy(*by_name.at(view.name + "_scale_inv")), block_rows,
                                     block_cols, values.back().data());
    } else {
      weights::convert_to_f32(view.dtype, view.bytes.data(), values.back().data(), values.back().size());
    }
    out.push_back({view.name, weights::DType::F32, view.shape,
                   std::as_bytes(std::span<const float>(values.back().data(), values.back().size()))});
  }
  weights::write_safetensors(twin + "/model.safetensors", out);
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
  write_dequantized_twin(root + "/fp8", root + "/twin");
  std::vector<int32_t> prompt;
  for (int i = 0; i < 11; ++i) prompt.push_back((i * 37 + 3) % 1000);
  // Split form: the fused W_in re-quantizes the BF16 in_proj_b/a rows to FP8 at load (weights/
  // rank_weights.h), which the twin does not; the split form keeps every weight as stored.
  const std::string projection = "split";
  std::map<std::string, Driver> runs;
  for (const char* name : {"bf16", "fp8", "twin"}) {
    auto runner = runner_for(root + "/" + name, projection);
    std::vector<Driver> drivers{make_driver(0, prompt, 1 << 20, 4)};
    run_drivers(*runner, drivers, {0});
    runs.emplace(name, drivers[0]);
  }
  const int64_t vocab = config.vocab_size;
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(runs.at("fp8").generated[k], runs.at("twin").generated[k]) << "token " << k;
    EXPECT_LT(relative_error(runs.at("fp8").logits[k].data(), runs.at("twin").logits[k].data(), vocab), 1e-5)
        << "token " << k;
  }
  const double rounding = relative_error(runs.at("fp8").logits[0].data(), runs.at("bf16").logits[0].data(), vocab);
  std::printf("FP8 vs BF16 checkpoint of the same seed: first-token logits max relative difference %.3e\n", rounding);
  EXPECT_GT(rounding, 1e-3) << "the FP8 weights should differ from the BF16 ones by their rounding";
  EXPECT_LT(rounding, 1.0);
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace ds::worker::testing
