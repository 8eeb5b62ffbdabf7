#include "weights/commands.h"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "weights/checkpoint.h"
#include "weights/gen_model.h"
#include "weights/rank_weights.h"

namespace ds::weights {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double peak_rss_gb() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024.0 / 1e9;  // ru_maxrss is in KiB on Linux
}

void add_gen_model(CLI::App& app) {
  struct Args {
    std::string preset, out, layout = "auto", twin;
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
  cmd->add_option(
      "--dequantized-twin", args->twin,
      "With --fp8: also write this folder, the same weights dequantized to BF16 (the FP8 path's reference)");
  cmd->callback([args] {
    if (!args->twin.empty() && !args->fp8) throw CLI::ValidationError("--dequantized-twin", "needs --fp8");
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
    std::printf("wrote %s: %s, %d file(s), %.2f GB in %.1f s%s\n", args->out.c_str(), args->preset.c_str(),
                result.num_files, result.total_bytes / 1e9, seconds_since(start),
                options.tokenizer_dir.empty() ? " (no tokenizer files found)" : "");
    if (!args->twin.empty()) {
      write_dequantized_twin(args->out, args->twin, DType::BF16);
      std::printf("wrote %s: its dequantized BF16 twin\n", args->twin.c_str());
    }
  });
}

// Loads every rank through one staging buffer the size of the largest tensor, as a GPU worker
// does (copy, upload, reuse), so the peak RSS shows the loader's own footprint.
void add_check_model(CLI::App& app) {
  struct Args {
    std::string model, form = "fused";
    int tp = 1;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("check-model", "Validate a checkpoint folder and time loading every rank");
  cmd->add_option("--model", args->model, "Checkpoint folder")->required();
  cmd->add_option("--tp", args->tp, "Tensor parallel size")->check(CLI::PositiveNumber);
  cmd->add_option("--gdn-projection", args->form, "fused | split")->check(CLI::IsMember({"fused", "split"}));
  cmd->callback([args] {
    auto start = std::chrono::steady_clock::now();
    const Checkpoint checkpoint = Checkpoint::open(args->model);
    const ModelConfig& c = checkpoint.config();
    std::printf("%s: %s, %d layers, hidden %lld, %s%s, %.2f GB of tensors, opened in %.2f s\n", args->model.c_str(),
                c.model_type.c_str(), c.num_hidden_layers, static_cast<long long>(c.hidden_size),
                c.is_moe() ? "MoE" : "dense", c.fp8.enabled ? ", FP8" : "", checkpoint.total_bytes() / 1e9,
                seconds_since(start));
    const GdnProjectionForm form = parse_gdn_projection_form(args->form);
    for (int rank = 0; rank < args->tp; ++rank) {
      size_t largest = 0;
      for (const auto& spec : rank_tensor_specs(c, rank, args->tp, form)) largest = std::max(largest, spec.nbytes());
      std::vector<std::byte> staging(largest);
      size_t bytes = 0, tensors = 0;
      start = std::chrono::steady_clock::now();
      load_rank_weights(checkpoint, rank, args->tp, form, [&](const TensorSpec& spec) -> void* {
        bytes += spec.nbytes();
        ++tensors;
        return staging.data();
      });
      const double seconds = seconds_since(start);
      std::printf("rank %d/%d: %zu tensors, %.2f GB in %.2f s = %.2f GB/s (largest tensor %.2f GB, peak RSS %.2f GB)\n",
                  rank, args->tp, tensors, bytes / 1e9, seconds, bytes / 1e9 / seconds, largest / 1e9, peak_rss_gb());
    }
  });
}

}  // namespace

void add_gen_model_command(CLI::App& app) {
  add_gen_model(app);
  add_check_model(app);
}

}  // namespace ds::weights
