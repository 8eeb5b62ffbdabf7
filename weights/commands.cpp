#include "weights/commands.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "weights/gen_model.h"

namespace ds::weights {

void add_gen_model_command(CLI::App& app) {
  struct Args {
    std::string preset, out, layout = "auto";
    uint64_t seed = 0;
    bool fp8 = false;
    uint64_t shard_mb = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("gen-model", "Write a checkpoint folder with random weights in a published layout");
  cmd->add_option("--preset", args->preset, "Model preset")->required()->check(CLI::IsMember(preset_names()));
  cmd->add_option("--out", args->out, "Output folder")->required();
  cmd->add_option("--seed", args->seed, "Random seed (same seed: same weights in every layout)");
  cmd->add_option("--layout", args->layout, "auto | qwen3.5 | qwen3.5-vl | qwen3-next")
      ->check(CLI::IsMember({"auto", "qwen3.5", "qwen3.5-vl", "qwen3-next"}));
  cmd->add_flag("--fp8", args->fp8, "Block FP8 (128x128 E4M3) linear weights, like the published -FP8 models");
  cmd->add_option("--shard-size", args->shard_mb, "Shard size in MB (0: one model.safetensors)");
  cmd->callback([args] {
    const ModelConfig config = preset_config(args->preset);
    GenModelOptions options;
    options.out_dir = args->out;
    options.seed = args->seed;
    options.layout = args->layout == "auto" ? default_layout(config) : parse_checkpoint_layout(args->layout);
    options.fp8 = args->fp8;
    options.shard_bytes = args->shard_mb << 20;
    options.tokenizer_dir = find_tokenizer_dir();
    const auto start = std::chrono::steady_clock::now();
    const GenModelResult result = write_random_checkpoint(config, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s: %s, %d file(s), %.2f GB in %.1f s%s\n", args->out.c_str(), args->preset.c_str(),
                result.num_files, result.total_bytes / 1e9, seconds,
                options.tokenizer_dir.empty() ? " (no tokenizer files found)" : "");
  });
}

}  // namespace ds::weights
