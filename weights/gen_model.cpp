#include "weights/gen_model.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "weights/dtype.h"
#include "weights/fp8_blocks.h"
#include "weights/rank_plan.h"
#include "weights/rank_weights.h"
#include "weights/safetensors.h"

namespace ds::weights {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_weight(const std::string& name) {
  return ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : name;
}

// The checkpoint's name prefix of a canonical name.
std::string stored_name(const std::string& canonical, CheckpointLayout layout) {
  if (canonical == "lm_head.weight") return canonical;
  return (layout == CheckpointLayout::kQwen35VL ? "model.language_model." : "model.") + canonical;
}

// The config as this layout declares it.
ModelConfig layout_config(ModelConfig config, const GenModelOptions& options) {
  const bool moe = config.is_moe();
  switch (options.layout) {
    case CheckpointLayout::kQwen35Text: config.model_type = moe ? "qwen3_5_moe_text" : "qwen3_5_text"; break;
    case CheckpointLayout::kQwen35VL: config.model_type = moe ? "qwen3_5_moe" : "qwen3_5"; break;
    case CheckpointLayout::kQwen3Next: config.model_type = "qwen3_next"; break;
  }
  config.gdn_layout = options.layout == CheckpointLayout::kQwen3Next ? GdnCheckpointLayout::kInterleaved
                                                                    : GdnCheckpointLayout::kSeparate;
  config.fp8 = Fp8Config{};
  if (options.fp8) {
    quantize_like_published_fp8(config,
                                options.layout == CheckpointLayout::kQwen35VL ? "model.language_model." : "model.");
  }
  return config;
}

ordered_json text_config_json(const ModelConfig& c, CheckpointLayout layout) {
  ordered_json j;
  j["model_type"] = layout == CheckpointLayout::kQwen35VL ? c.model_type + "_text" : c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["attn_output_gate"] = c.attn_output_gate;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["linear_num_key_heads"] = c.linear_num_key_heads;
  j["linear_num_value_heads"] = c.linear_num_value_heads;
  j["linear_key_head_dim"] = c.linear_key_head_dim;
  j["linear_value_head_dim"] = c.linear_value_head_dim;
  j["linear_conv_kernel_dim"] = c.linear_conv_kernel_dim;
  if (c.intermediate_size > 0) j["intermediate_size"] = c.intermediate_size;
  if (c.is_moe()) {
    j["num_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["mlp_only_layers"] = c.mlp_only_layers;
  }
  bool every_fourth = true;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    every_fourth &= (c.layer_types[i] == LayerType::kFullAttention) == ((i + 1) % 4 == 0);
  }
  if (layout == CheckpointLayout::kQwen3Next && every_fourth) {
    j["full_attention_interval"] = 4;  // as Qwen3-Next publishes it; Qwen3.5 lists layer_types
    j["rope_theta"] = c.rope_theta;
    j["partial_rotary_factor"] = c.partial_rotary_factor;
  } else {
    std::vector<std::string> types;
    for (auto t : c.layer_types) types.push_back(t == LayerType::kFullAttention ? "full_attention" : "linear_attention");
    j["layer_types"] = types;
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", c.rope_theta},
                            {"partial_rotary_factor", c.partial_rotary_factor}};
  }
  j["dtype"] = c.dtype == DType::F32 ? "float32" : c.dtype == DType::F16 ? "float16" : "bfloat16";
  if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids.front();
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  return j;
}

std::string config_json(const ModelConfig& c, CheckpointLayout layout) {
  ordered_json j;
  const bool moe = c.is_moe();
  ordered_json text = text_config_json(c, layout);
  if (layout == CheckpointLayout::kQwen35VL) {
    j["architectures"] = {moe ? "Qwen3_5MoeForConditionalGeneration" : "Qwen3_5ForConditionalGeneration"};
    j["model_type"] = c.model_type;
    j["text_config"] = text;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["eos_token_id"] = c.eos_token_ids;
  } else {
    const char* arch = layout == CheckpointLayout::kQwen3Next ? "Qwen3NextForCausalLM"
                       : moe                                  ? "Qwen3_5MoeForCausalLM"
                                                              : "Qwen3_5ForCausalLM";
    j["architectures"] = {arch};
    for (auto& [key, value] : text.items()) j[key] = value;
  }
  if (c.fp8.enabled) {
    j["quantization_config"] = {{"quant_method", "fp8"},
                                {"fmt", "e4m3"},
                                {"activation_scheme", "dynamic"},
                                {"weight_block_size", {c.fp8.block_rows, c.fp8.block_cols}},
                                {"modules_to_not_convert", c.fp8.modules_to_not_convert}};
  }
  return j.dump(2) + "\n";
}

bool is_linear_source(const std::string& name) {
  return ends_with(name, "_proj.weight") || name.find(".in_proj_") != std::string::npos ||
         ends_with(name, "experts.gate_up_proj") || ends_with(name, "experts.down_proj");
}

// Produces the logical weights by canonical Qwen3.5 name (the one place random values are made),
// then stores them the way each layout does.
class WeightSource {
 public:
  WeightSource(const ModelConfig& config, uint64_t seed) : c_(config), seed_(seed) {}

  // fp32 values of checkpoint tensor `name` of `shape` in the config's layout.
  std::vector<float> values(const std::string& name, const std::vector<int64_t>& shape) {
    if (ends_with(name, "linear_attn.in_proj_qkvz.weight")) return interleave_qkvz(name);
    if (ends_with(name, "linear_attn.in_proj_ba.weight")) return interleave_ba(name);
    const auto expert = name.find(".mlp.experts.");
    if (expert != std::string::npos && ends_with(name, "_proj.weight")) return per_expert(name, expert);
    return logical(name, shape);
  }

 private:
  std::vector<float> logical(const std::string& name, const std::vector<int64_t>& shape) {
    TensorSpec spec{name, DType::F32, shape};
    std::vector<float> out(static_cast<size_t>(spec.numel()));
    fill_dummy(spec, seed_, out.data());
    return out;
  }

  // Cached: the per-expert layout reads one fused tensor many times.
  const std::vector<float>& fused_experts(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    if (cache_.size() >= 2) cache_.clear();
    return cache_[name] = logical(name, shape);
  }

  std::vector<float> per_expert(const std::string& name, size_t expert_pos) {
    const std::string prefix = name.substr(0, expert_pos) + ".mlp.experts.";
    const std::string rest = name.substr(prefix.size());
    const int64_t e = std::stoll(rest.substr(0, rest.find('.')));
    const std::string proj = rest.substr(rest.find('.') + 1);
    const int64_t E = c_.num_experts, I = c_.moe_intermediate_size, H = c_.hidden_size;
    if (proj == "down_proj.weight") {
      const auto& down = fused_experts(prefix + "down_proj", {E, H, I});
      return std::vector<float>(down.begin() + e * H * I, down.begin() + (e + 1) * H * I);
    }
    const auto& gate_up = fused_experts(prefix + "gate_up_proj", {E, 2 * I, H});
    const int64_t start = (e * 2 * I + (proj == "up_proj.weight" ? I : 0)) * H;
    return std::vector<float>(gate_up.begin() + start, gate_up.begin() + start + I * H);
  }

  std::vector<float> interleave_qkvz(const std::string& name) {
    const std::string a = name.substr(0, name.size() - std::string("in_proj_qkvz.weight").size());
    const int64_t H = c_.hidden_size, dk = c_.linear_key_head_dim, dv = c_.linear_value_head_dim;
    const int64_t Hk = c_.linear_num_key_heads, Hv = c_.linear_num_value_heads, r = Hv / Hk;
    const int64_t K = Hk * dk, V = Hv * dv;
    const auto qkv = logical(a + "in_proj_qkv.weight", {2 * K + V, H});
    const auto z = logical(a + "in_proj_z.weight", {V, H});
    std::vector<float> out;
    out.reserve(qkv.size() + z.size());
    auto append_rows = [&](const std::vector<float>& src, int64_t row, int64_t n) {
      out.insert(out.end(), src.begin() + row * H, src.begin() + (row + n) * H);
    };
    for (int64_t g = 0; g < Hk; ++g) {
      append_rows(qkv, g * dk, dk);
      append_rows(qkv, K + g * dk, dk);
      append_rows(qkv, 2 * K + g * r * dv, r * dv);
      append_rows(z, g * r * dv, r * dv);
    }
    return out;
  }

  std::vector<float> interleave_ba(const std::string& name) {
    const std::string a = name.substr(0, name.size() - std::string("in_proj_ba.weight").size());
    const int64_t H = c_.hidden_size, Hk = c_.linear_num_key_heads, Hv = c_.linear_num_value_heads, r = Hv / Hk;
    const auto b = logical(a + "in_proj_b.weight", {Hv, H});
    const auto av = logical(a + "in_proj_a.weight", {Hv, H});
    std::vector<float> out;
    out.reserve(b.size() + av.size());
    for (int64_t g = 0; g < Hk; ++g) {
      out.insert(out.end(), b.begin() + g * r * H, b.begin() + (g + 1) * r * H);
      out.insert(out.end(), av.begin() + g * r * H, av.begin() + (g + 1) * r * H);
    }
    return out;
  }

  const ModelConfig& c_;
  uint64_t seed_;
  std::map<std::string, std::vector<float>> cache_;
};

struct FileTensor {
  std::string canonical;
  TensorLayout layout;    // stored name, dtype, shape
  bool is_scale = false;  // the "_scale_inv" of the tensor before it
};

std::vector<FileTensor> checkpoint_tensors(const ModelConfig& c, CheckpointLayout layout) {
  const auto experts =
      layout == CheckpointLayout::kQwen3Next ? detail::ExpertsLayout::kPerExpert : detail::ExpertsLayout::kFused3D;
  const detail::RankPlan plan = detail::plan_rank(c, 0, 1, GdnProjectionForm::kFused, experts);
  std::vector<FileTensor> out;
  for (const auto& [name, source] : plan.sources) {
    const bool quantized = c.fp8.enabled && is_linear_source(name) && !detail::kept_unquantized(c.fp8, strip_weight(name));
    const DType dtype = quantized ? DType::F8_E4M3 : name.find("A_log") != std::string::npos ? DType::F32 : c.dtype;
    out.push_back({name, {stored_name(name, layout), dtype, source.shape}, false});
    if (quantized) {
      TensorSpec scale = detail::scale_spec(TensorSpec{name, dtype, source.shape}, c.fp8);
      out.push_back({scale.name, {stored_name(scale.name, layout), DType::F32, scale.shape}, true});
    }
  }
  return out;
}

std::vector<std::vector<size_t>> group_into_shards(const std::vector<FileTensor>& tensors, uint64_t shard_bytes) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t current = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = TensorSpec{"", tensors[i].layout.dtype, tensors[i].layout.shape}.nbytes();
    // A weight and its scale stay together.
    if (shard_bytes > 0 && current > 0 && current + bytes > shard_bytes && !tensors[i].is_scale) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
  }
  return shards;
}

std::string shard_file_name(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

}  // namespace

CheckpointLayout parse_checkpoint_layout(const std::string& name) {
  if (name == "qwen3.5") return CheckpointLayout::kQwen35Text;
  if (name == "qwen3.5-vl") return CheckpointLayout::kQwen35VL;
  if (name == "qwen3-next") return CheckpointLayout::kQwen3Next;
  throw std::invalid_argument("unknown checkpoint layout \"" + name + "\" (qwen3.5 | qwen3.5-vl | qwen3-next)");
}

CheckpointLayout default_layout(const ModelConfig& config) {
  return config.model_type == "qwen3_next" ? CheckpointLayout::kQwen3Next : CheckpointLayout::kQwen35VL;
}

GenModelResult write_random_checkpoint(const ModelConfig& base, const GenModelOptions& options) {
  GenModelResult result;
  result.config = layout_config(base, options);
  const ModelConfig& c = result.config;
  const fs::path dir(options.out_dir);
  fs::create_directories(dir);
  write_text(dir / "config.json", config_json(c, options.layout));

  const std::vector<FileTensor> tensors = checkpoint_tensors(c, options.layout);
  const auto shards = group_into_shards(tensors, options.shard_bytes);
  WeightSource source(c, options.seed);
  std::vector<float> pending_scales;  // of the quantized weight written just before
  ordered_json weight_map = ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? "model.safetensors" : shard_file_name(s, shards.size());
    std::vector<TensorLayout> layouts;
    for (size_t i : shards[s]) {
      layouts.push_back(tensors[i].layout);
      weight_map[tensors[i].layout.name] = file;
    }
    write_safetensors_streamed(
        (dir / file).string(), layouts,
        [&](size_t k, std::span<std::byte> bytes) {
          const FileTensor& t = tensors[shards[s][k]];
          if (t.is_scale) {
            std::memcpy(bytes.data(), pending_scales.data(), bytes.size());
            return;
          }
          const std::vector<float> values = source.values(t.canonical, t.layout.shape);
          if (t.layout.dtype == DType::F8_E4M3) {
            const detail::MatrixShape m = detail::matrix_shape(t.layout.shape);
            pending_scales.assign(detail::scale_spec(TensorSpec{"", t.layout.dtype, t.layout.shape}, c.fp8).numel(), 0.f);
            // Power-of-two scales: the dequantized twin (write_dequantized_twin) is then exact in BF16.
            detail::quantize_fp8_blocks(values.data(), m.batches, m.rows, m.cols, c.fp8.block_rows, c.fp8.block_cols, 0,
                                        m.rows, reinterpret_cast<uint8_t*>(bytes.data()), pending_scales.data(),
                                        /*power_of_two_scales=*/true);
          } else {
            convert_float(DType::F32, values.data(), t.layout.dtype, bytes.data(), values.size());
          }
        },
        {{"format", "pt"}});
    result.total_bytes += fs::file_size(dir / file);
  }
  result.num_files = static_cast<int>(shards.size());
  if (shards.size() > 1) {
    uint64_t total = 0;
    for (const auto& t : tensors) total += TensorSpec{"", t.layout.dtype, t.layout.shape}.nbytes();
    ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  if (!options.tokenizer_dir.empty()) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"}) {
      const fs::path from = fs::path(options.tokenizer_dir) / file;
      if (fs::exists(from)) fs::copy_file(from, dir / file, fs::copy_options::overwrite_existing);
    }
  }
  return result;
}

void write_dequantized_twin(const std::string& fp8_dir, const std::string& out_dir, DType dtype) {
  const fs::path from(fp8_dir), to(out_dir);
  ordered_json config = ordered_json::parse(std::ifstream(from / "config.json"));
  if (!config.contains("quantization_config")) throw std::runtime_error(fp8_dir + ": not a block-FP8 checkpoint");
  const auto& block = config.at("quantization_config").at("weight_block_size");
  const int block_rows = block.at(0), block_cols = block.at(1);
  config.erase("quantization_config");
  const char* dtype_json = dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : nullptr;
  if (dtype_json == nullptr) throw std::invalid_argument("write_dequantized_twin: dtype must be F32 or BF16");
  config["dtype"] = dtype_json;
  if (config.contains("text_config")) config["text_config"]["dtype"] = dtype_json;
  fs::create_directories(to);
  write_text(to / "config.json", config.dump(2) + "\n");

  // A weight's scales may sit in another shard: index every tensor of the folder first.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const TensorView*> by_name;
  for (const auto& entry : fs::directory_iterator(from)) {
    if (entry.path().extension() != ".safetensors") continue;
    files.push_back(std::make_unique<SafetensorsFile>(entry.path().string()));
    for (const auto& view : files.back()->tensors()) by_name[view.name] = &view;
  }
  auto host = [](const TensorView& view, DType as) {
    HostTensor t{TensorSpec{view.name, as, view.shape},
                 std::vector<std::byte>(TensorSpec{"", as, view.shape}.nbytes())};
    convert_float(view.dtype, view.bytes.data(), as, t.storage.data(), static_cast<size_t>(view.numel()));
    return t;
  };
  ordered_json weight_map = ordered_json::object();
  uint64_t total = 0;
  for (const auto& file : files) {
    std::vector<const TensorView*> kept;
    std::vector<TensorLayout> layouts;
    for (const auto& view : file->tensors()) {
      if (ends_with(view.name, "_scale_inv")) continue;
      const DType out = view.dtype == DType::F8_E4M3 ? dtype : view.dtype;
      kept.push_back(&view);
      layouts.push_back({view.name, out, view.shape});
      weight_map[view.name] = fs::path(file->path()).filename().string();
      total += TensorSpec{"", out, view.shape}.nbytes();
    }
    auto fill = [&](size_t k, std::span<std::byte> bytes) {
      const TensorView& view = *kept[k];
      if (view.dtype != DType::F8_E4M3) {
        std::memcpy(bytes.data(), view.bytes.data(), bytes.size());
        return;
      }
      const auto scale = by_name.find(view.name + "_scale_inv");
      if (scale == by_name.end()) throw std::runtime_error(fp8_dir + ": FP8 tensor " + view.name + " has no scales");
      std::vector<float> values(static_cast<size_t>(view.numel()));
      dequantize_fp8_blocks(host(view, DType::F8_E4M3), host(*scale->second, DType::F32), block_rows, block_cols,
                            values.data());
      convert_float(DType::F32, values.data(), dtype, bytes.data(), values.size());
    };
    write_safetensors_streamed((to / fs::path(file->path()).filename()).string(), layouts, fill, file->metadata());
  }
  if (fs::exists(from / "model.safetensors.index.json")) {
    ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text(to / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"}) {
    if (fs::exists(from / name)) fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing);
  }
}

std::string find_tokenizer_dir() {
  std::vector<fs::path> candidates;
  if (const char* data = std::getenv("DELTASERVE_DATA_DIR")) candidates.push_back(fs::path(data) / "tokenizer/qwen3");
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    for (const char* up : {"../../data", "../data", "../share/deltaserve/data"}) {
      candidates.push_back(exe.parent_path() / up / "tokenizer/qwen3");
    }
  }
  for (const auto& dir : candidates) {
    if (fs::exists(dir / "tokenizer.json")) return fs::weakly_canonical(dir).string();
  }
  return "";
}

}  // namespace ds::weights
