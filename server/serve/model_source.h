// Where the served model and its tokenizer come from, and which devices the local ranks use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/serve/serve_options.h"

namespace ds::server {

struct ResolvedModel {
  std::string model_dir;  // absolute; empty when building a preset
  std::string preset;
  std::string load_format = "auto";
  std::string tokenizer_dir;
  std::string served_name;
};

// --data-dir, else $DELTASERVE_DATA_DIR, else the first data/ holding tokenizer/qwen3 next to
// the executable (bin/../data, build/bin/../../data) or in the working directory.
// Throws std::runtime_error listing the places looked at.
std::string find_data_dir(const std::string& configured);

// --model / --preset, or the embedded default: DATA/models/tiny-r2, written once by
// `deltaserve gen-model --preset tiny` (falling back to --preset tiny --load-format dummy, with a
// warning, when that fails).
ResolvedModel resolve_model(const ServeOptions& options, const std::string& data_dir);

// eos_token_id of config.json (top level or text_config) and generation_config.json; empty when
// the folder has neither. Throws std::runtime_error naming the file on malformed JSON.
std::vector<int32_t> checkpoint_eos_ids(const std::string& model_dir);

// One device per local rank: "cuda:i" when GPUs are visible (and not --device cpu), else "cpu".
// Throws std::runtime_error for --device cuda without enough GPUs.
std::vector<std::string> local_devices(const std::string& device, int ranks_here);

// The visible NVIDIA GPUs, from the driver's /proc entries and CUDA_VISIBLE_DEVICES (no CUDA
// runtime in the front end).
int visible_gpu_count();

}  // namespace ds::server
