// Per-rank shards put back together reproduce the whole (TP 1) tensors, for every checkpoint
// layout, GDN projection form, expert layout and FP8; different layouts of the same weights
// give identical rank tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/unit/weights/test_util.h"
#include "weights/checkpoint.h"
#include "weights/fp8_blocks.h"
#include "weights/gen_model.h"
#include "weights/rank_weights.h"

namespace ds::weights {
namespace {

using testing::ScratchDir;

using RankTensors = std::map<std::string, HostTensor>;

RankTensors load(const Checkpoint& ck, int rank, int world, GdnProjectionForm form) {
  RankTensors out;
  for (auto& t : load_rank_weights_host(ck, rank, world, form)) out.emplace(t.spec.name, std::move(t));
  return out;
}

GenModelResult write(const ModelConfig& c, CheckpointLayout layout, const std::string& dir, bool fp8 = false,
                     uint64_t shard_bytes = 0) {
  GenModelOptions options;
  options.out_dir = dir;
  options.seed = 7;
  options.layout = layout;
  options.fp8 = fp8;
  options.shard_bytes = shard_bytes;
  return write_random_checkpoint(c, options);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Concatenates, along `axis`, part p of every rank for each part p in turn.
std::vector<std::byte> reassemble(const std::vector<const HostTensor*>& ranks, int axis, const std::vector<int64_t>& parts) {
  const auto& shape = ranks[0]->spec.shape;
  const size_t element = dtype_size(ranks[0]->spec.dtype);
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= shape[i];
  for (size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t rank_len = shape[axis];
  std::vector<std::byte> out;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t offset = 0;
    for (int64_t part : parts) {
      for (const HostTensor* r : ranks) {
        const std::byte* src = r->data() + ((o * rank_len + offset) * inner) * element;
        out.insert(out.end(), src, src + part * inner * element);
      }
      offset += part;
    }
  }
  return out;
}

struct Rule {
  enum Kind { kSplit, kReplicated, kVocab, kKvReplicated } kind;
  int axis = 0;
  std::vector<int64_t> parts;
};

// How each rank tensor is cut (the contract of rank_weights.h), in elements (or scale blocks).
Rule rule_for(const std::string& full_name, const ModelConfig& c, const RankDims& d, int block) {
  const bool scale = ends_with(full_name, "_scale_inv");
  const std::string name = scale ? full_name.substr(0, full_name.size() - 10) : full_name;
  auto b = [&](int64_t n) { return scale ? (n + block - 1) / block : n; };
  const bool separate = c.gdn_layout == GdnCheckpointLayout::kSeparate;
  const int axis_offset = ends_with(name, "experts.gate_up_proj") || ends_with(name, "experts.down_proj") ? 1 : 0;
  if (name == "embed_tokens" || name == "lm_head") return {Rule::kVocab, 0, {}};
  if (ends_with(name, "norm") || ends_with(name, "mlp.gate") || ends_with(name, "shared_expert_gate")) {
    return {Rule::kReplicated, 0, {}};
  }
  if (ends_with(name, "linear_attn.in_proj")) {
    return {Rule::kSplit, 0, {b(d.key_dim), b(d.key_dim), b(d.value_dim), b(d.value_dim), b(d.value_heads), b(d.value_heads)}};
  }
  if (ends_with(name, "in_proj_qkvz")) {
    return separate ? Rule{Rule::kSplit, 0, {b(d.key_dim), b(d.key_dim), b(d.value_dim), b(d.value_dim)}}
                    : Rule{Rule::kSplit, 0, {b(d.conv_dim + d.value_dim)}};
  }
  if (ends_with(name, "in_proj_ba")) {
    return separate ? Rule{Rule::kSplit, 0, {b(d.value_heads), b(d.value_heads)}} : Rule{Rule::kSplit, 0, {b(2 * d.value_heads)}};
  }
  if (ends_with(name, "conv1d")) return {Rule::kSplit, 0, {d.key_dim, d.key_dim, d.value_dim}};
  if (ends_with(name, "A_log") || ends_with(name, "dt_bias")) return {Rule::kSplit, 0, {d.value_heads}};
  if (ends_with(name, "k_proj") || ends_with(name, "v_proj")) {
    if (d.world > c.num_key_value_heads) return {Rule::kKvReplicated, 0, {}};
    return {Rule::kSplit, 0, {b(d.kv_heads * c.head_dim)}};
  }
  if (ends_with(name, "q_proj")) return {Rule::kSplit, 0, {b(d.q_heads * 2 * c.head_dim)}};
  if (ends_with(name, "experts.gate_up_proj")) return {Rule::kSplit, 1, {b(d.moe_intermediate), b(d.moe_intermediate)}};
  if (ends_with(name, "shared_expert.gate_up_proj")) {
    return {Rule::kSplit, 0, {b(d.shared_intermediate), b(d.shared_intermediate)}};
  }
  if (ends_with(name, "mlp.gate_up_proj")) return {Rule::kSplit, 0, {b(d.intermediate), b(d.intermediate)}};
  if (ends_with(name, "experts.down_proj") || ends_with(name, "down_proj") || ends_with(name, "out_proj") ||
      ends_with(name, "o_proj")) {
    const int64_t n = ends_with(name, "experts.down_proj") ? d.moe_intermediate
                      : ends_with(name, "shared_expert.down_proj") ? d.shared_intermediate
                      : ends_with(name, "mlp.down_proj")           ? d.intermediate
                      : ends_with(name, "out_proj")                ? d.value_dim
                                                                   : d.q_heads * c.head_dim;
    return {Rule::kSplit, 1 + axis_offset, {b(n)}};
  }
  ADD_FAILURE() << "no rule for " << full_name;
  return {Rule::kReplicated, 0, {}};
}

std::vector<std::byte> bytes_of(const HostTensor& t) { return t.storage; }

std::vector<std::byte> rows_of(const HostTensor& t, int64_t first, int64_t count) {
  EXPECT_LE(first + count, t.spec.shape[0]);
  if (first + count > t.spec.shape[0]) return {};
  const size_t row = t.spec.nbytes() / t.spec.shape[0];
  return std::vector<std::byte>(t.data() + first * row, t.data() + (first + count) * row);
}

// Checks that the `world` rank shards of checkpoint `ck` put back together equal its TP 1 tensors.
void expect_reassembles(const Checkpoint& ck, int world, GdnProjectionForm form) {
  const ModelConfig& c = ck.config();
  const RankTensors whole = load(ck, 0, 1, form);
  std::vector<RankTensors> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(load(ck, r, world, form));
  const RankDims d = rank_dims(c, 0, world);
  for (const auto& [name, full] : whole) {
    SCOPED_TRACE(name + " world " + std::to_string(world));
    std::vector<const HostTensor*> parts;
    for (auto& r : ranks) {
      ASSERT_TRUE(r.count(name));
      parts.push_back(&r.at(name));
    }
    const Rule rule = rule_for(name, c, d, c.fp8.block_rows);
    switch (rule.kind) {
      case Rule::kReplicated:
        for (const HostTensor* p : parts) EXPECT_EQ(bytes_of(*p), bytes_of(full));
        break;
      case Rule::kKvReplicated:
        for (int r = 0; r < world; ++r) {
          const RankDims rd = rank_dims(c, r, world);
          const int64_t rows = ends_with(name, "_scale_inv") ? c.head_dim / c.fp8.block_rows : c.head_dim;
          EXPECT_EQ(bytes_of(*parts[r]), rows_of(full, rd.first_kv_head * rows, rows));
        }
        break;
      case Rule::kVocab: {
        const auto joined = reassemble(parts, 0, {d.vocab_rows});
        const size_t row = full.spec.nbytes() / full.spec.shape[0], real = c.vocab_size * row;
        EXPECT_EQ(std::vector<std::byte>(joined.begin(), joined.begin() + real), rows_of(full, 0, c.vocab_size));
        for (size_t i = real; i < joined.size(); ++i) ASSERT_EQ(joined[i], std::byte{0}) << "padded vocab row";
        break;
      }
      case Rule::kSplit: EXPECT_EQ(reassemble(parts, rule.axis, rule.parts), bytes_of(full)); break;
    }
  }
}

struct Case {
  const char* name;
  ModelConfig config;
  CheckpointLayout layout;
};

std::vector<Case> cases() {
  return {{"dense-qwen3.5", testing::small_dense(), CheckpointLayout::kQwen35Text},
          {"dense-qwen3-next", testing::small_dense(), CheckpointLayout::kQwen3Next},
          {"moe-fused3d-qwen3.5-vl", testing::small_moe(), CheckpointLayout::kQwen35VL},
          {"moe-per-expert-qwen3-next", testing::small_moe(), CheckpointLayout::kQwen3Next}};
}

TEST(Sharding, ShardsReassembleForTp124) {
  for (const auto& tc : cases()) {
    SCOPED_TRACE(tc.name);
    ScratchDir dir("reassemble");
    write(tc.config, tc.layout, dir.str());
    const Checkpoint ck = Checkpoint::open(dir.str());
    for (auto form : {GdnProjectionForm::kFused, GdnProjectionForm::kSplit}) {
      for (int world : {2, 4}) expect_reassembles(ck, world, form);
    }
  }
}

TEST(Sharding, ShardsReassembleForTp3WithReplicatedKv) {
  for (auto layout : {CheckpointLayout::kQwen35Text, CheckpointLayout::kQwen3Next}) {
    ScratchDir dir("tp3");
    ModelConfig c = testing::small_moe(3);  // 3 query heads, 1 KV head (replicated), 3 GDN key heads
    c.mlp_only_layers = {1};
    c.intermediate_size = 96;
    write(c, layout, dir.str());
    const Checkpoint ck = Checkpoint::open(dir.str());
    for (auto form : {GdnProjectionForm::kFused, GdnProjectionForm::kSplit}) expect_reassembles(ck, 3, form);
  }
}

TEST(Sharding, FusedInProjIsQkvZBAOfTheCheckpoint) {
  ScratchDir dir("win");
  const ModelConfig c = testing::small_dense();
  write(c, CheckpointLayout::kQwen35Text, dir.str());
  const Checkpoint ck = Checkpoint::open(dir.str());
  const RankTensors whole = load(ck, 0, 1, GdnProjectionForm::kFused);
  std::vector<std::byte> expected;
  for (const char* part : {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"}) {
    const TensorView& t = ck.get(std::string("layers.0.linear_attn.") + part + ".weight");
    expected.insert(expected.end(), t.bytes.begin(), t.bytes.end());
  }
  EXPECT_EQ(bytes_of(whole.at("layers.0.linear_attn.in_proj")), expected);
}

// Every layout of the same seed gives byte-identical rank tensors (fused form: one W_in).
TEST(Sharding, LayoutsOfTheSameWeightsGiveIdenticalRankTensors) {
  for (const ModelConfig& c : {testing::small_dense(), testing::small_moe()}) {
    ScratchDir a("same_a"), b("same_b"), v("same_v");
    write(c, CheckpointLayout::kQwen35Text, a.str());
    write(c, CheckpointLayout::kQwen3Next, b.str());
    write(c, CheckpointLayout::kQwen35VL, v.str());
    const Checkpoint qwen35 = Checkpoint::open(a.str()), next = Checkpoint::open(b.str()), vl = Checkpoint::open(v.str());
    ASSERT_EQ(next.config().gdn_layout, GdnCheckpointLayout::kInterleaved);
    ASSERT_TRUE(next.find("layers.0.linear_attn.in_proj_qkvz.weight"));
    for (int world : {1, 2, 4}) {
      for (int rank = 0; rank < world; ++rank) {
        const RankTensors x = load(qwen35, rank, world, GdnProjectionForm::kFused);
        const RankTensors y = load(next, rank, world, GdnProjectionForm::kFused);
        const RankTensors z = load(vl, rank, world, GdnProjectionForm::kFused);
        ASSERT_EQ(x.size(), y.size());
        for (const auto& [name, t] : x) {
          EXPECT_EQ(bytes_of(t), bytes_of(y.at(name))) << name << " rank " << rank << "/" << world;
          EXPECT_EQ(bytes_of(t), bytes_of(z.at(name))) << name << " rank " << rank << "/" << world;
        }
      }
    }
  }
}

// A hand-written Qwen3-Next projection whose rows carry their meaning, to pin the interleaved
// layout: group g = [q_g (dk) | k_g (dk) | v_g (r·dv) | z_g (r·dv)], ba group g = [b_g (r) | a_g (r)].
TEST(Sharding, InterleavedLayoutMapsToFusedRows) {
  ModelConfig c = testing::small_dense();
  c.model_type = "qwen3_next";
  c.gdn_layout = GdnCheckpointLayout::kInterleaved;
  const int64_t H = c.hidden_size, dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t Hk = c.linear_num_key_heads, Hv = c.linear_num_value_heads, r = Hv / Hk;
  ScratchDir dir("tags");
  write(c, CheckpointLayout::kQwen3Next, dir.str());
  // Replace the two projections of layer 0 by tagged rows: tag = part*10000 + head*100 + index.
  enum { kQ = 1, kK, kV, kZ, kB, kA };
  std::vector<float> qkvz_tags, ba_tags;
  for (int64_t g = 0; g < Hk; ++g) {
    for (int64_t i = 0; i < dk; ++i) qkvz_tags.push_back(kQ * 10000 + g * 100 + i);
    for (int64_t i = 0; i < dk; ++i) qkvz_tags.push_back(kK * 10000 + g * 100 + i);
    for (int64_t i = 0; i < r * dv; ++i) qkvz_tags.push_back(kV * 10000 + (g * r + i / dv) * 100 + i % dv);
    for (int64_t i = 0; i < r * dv; ++i) qkvz_tags.push_back(kZ * 10000 + (g * r + i / dv) * 100 + i % dv);
    for (int64_t i = 0; i < r; ++i) ba_tags.push_back(kB * 10000 + (g * r + i) * 100);
    for (int64_t i = 0; i < r; ++i) ba_tags.push_back(kA * 10000 + (g * r + i) * 100);
  }
  std::vector<std::pair<std::string, std::vector<float>>> replaced = {
      {"model.layers.0.linear_attn.in_proj_qkvz.weight", qkvz_tags}, {"model.layers.0.linear_attn.in_proj_ba.weight", ba_tags}};
  {
    SafetensorsFile file(dir / "model.safetensors");
    std::vector<std::vector<float>> storage;
    std::vector<TensorToWrite> tensors;
    for (const auto& t : file.tensors()) {
      TensorToWrite w{t.name, t.dtype, t.shape, t.bytes};
      for (const auto& [name, tags] : replaced) {
        if (t.name != name) continue;
        std::vector<float> rows;
        for (float tag : tags) rows.insert(rows.end(), H, tag);
        storage.push_back(std::move(rows));
        w.dtype = DType::F32;  // F32 tags are exact; the loader converts to the config dtype (F32 here)
        w.data = std::as_bytes(std::span(storage.back()));
      }
      tensors.push_back(w);
    }
    write_safetensors(dir / "tagged.safetensors", tensors);
  }
  std::filesystem::rename(dir / "tagged.safetensors", dir / "model.safetensors");
  // Load as F32 so that the tags survive.
  std::string config_text;
  {
    std::ifstream in(dir / "config.json");
    config_text.assign(std::istreambuf_iterator<char>(in), {});
  }
  config_text.replace(config_text.find("\"bfloat16\""), 10, "\"float32\"");
  {
    std::ofstream out(dir / "config.json");
    out << config_text;
  }
  const Checkpoint ck = Checkpoint::open(dir.str());
  for (int world : {1, 2, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      const RankDims d = rank_dims(ck.config(), rank, world);
      const RankTensors t = load(ck, rank, world, GdnProjectionForm::kFused);
      const HostTensor& w = t.at("layers.0.linear_attn.in_proj");
      std::vector<float> expected;
      const int64_t k0 = rank * d.key_heads, v0 = rank * d.value_heads;
      for (int64_t h = 0; h < d.key_heads; ++h) for (int64_t i = 0; i < dk; ++i) expected.push_back(kQ * 10000 + (k0 + h) * 100 + i);
      for (int64_t h = 0; h < d.key_heads; ++h) for (int64_t i = 0; i < dk; ++i) expected.push_back(kK * 10000 + (k0 + h) * 100 + i);
      for (int64_t h = 0; h < d.value_heads; ++h) for (int64_t i = 0; i < dv; ++i) expected.push_back(kV * 10000 + (v0 + h) * 100 + i);
      for (int64_t h = 0; h < d.value_heads; ++h) for (int64_t i = 0; i < dv; ++i) expected.push_back(kZ * 10000 + (v0 + h) * 100 + i);
      for (int64_t h = 0; h < d.value_heads; ++h) expected.push_back(kB * 10000 + (v0 + h) * 100);
      for (int64_t h = 0; h < d.value_heads; ++h) expected.push_back(kA * 10000 + (v0 + h) * 100);
      ASSERT_EQ(static_cast<int64_t>(expected.size()), w.spec.shape[0]);
      for (size_t row = 0; row < expected.size(); ++row) {
        ASSERT_EQ(w.as<float>()[row * H], expected[row]) << "rank " << rank << "/" << world << " row " << row;
      }
    }
  }
}

TEST(Sharding, Fp8SplitFormReassemblesWithScales) {
  for (bool moe : {false, true}) {
    for (auto layout : {CheckpointLayout::kQwen35VL, CheckpointLayout::kQwen3Next}) {
      ScratchDir dir("fp8");
      write(testing::fp8_sized(moe), layout, dir.str(), /*fp8=*/true);
      const Checkpoint ck = Checkpoint::open(dir.str());
      ASSERT_TRUE(ck.config().fp8.enabled);
      const RankTensors whole = load(ck, 0, 1, GdnProjectionForm::kSplit);
      EXPECT_EQ(whole.at("layers.0.linear_attn.in_proj_qkvz").spec.dtype, DType::F8_E4M3);
      EXPECT_TRUE(whole.count("layers.0.linear_attn.in_proj_qkvz_scale_inv"));
      EXPECT_EQ(whole.at("layers.0.linear_attn.in_proj_ba").spec.dtype, DType::BF16);  // kept unquantized
      EXPECT_EQ(whole.at("layers.3.self_attn.o_proj").spec.dtype, DType::F8_E4M3);
      for (int world : {2, 4}) expect_reassembles(ck, world, GdnProjectionForm::kSplit);
    }
  }
}

// FP8 weights dequantize to the BF16 weights of the same seed (within E4M3 precision), and the
// fused W_in (whose BF16 b/a rows are quantized at load) agrees with the split form.
TEST(Sharding, Fp8DequantizesToTheBf16Weights) {
  const ModelConfig c = testing::fp8_sized(true);
  ScratchDir fp8_dir("fp8q"), bf16_dir("bf16q");
  write(c, CheckpointLayout::kQwen35VL, fp8_dir.str(), true);
  write(c, CheckpointLayout::kQwen35VL, bf16_dir.str(), false);
  const Checkpoint fp8 = Checkpoint::open(fp8_dir.str()), bf16 = Checkpoint::open(bf16_dir.str());
  for (int world : {1, 2}) {
    for (int rank = 0; rank < world; ++rank) {
      const RankTensors q = load(fp8, rank, world, GdnProjectionForm::kFused);
      const RankTensors b = load(bf16, rank, world, GdnProjectionForm::kFused);
      for (const char* name : {"layers.0.linear_attn.in_proj", "layers.3.self_attn.q_proj", "layers.1.mlp.experts.gate_up_proj",
                               "layers.2.linear_attn.out_proj"}) {
        SCOPED_TRACE(name);
        const HostTensor& w = q.at(name);
        ASSERT_EQ(w.spec.dtype, DType::F8_E4M3);
        std::vector<float> dequantized(w.spec.numel()), reference(w.spec.numel());
        dequantize_fp8_blocks(w, q.at(std::string(name) + "_scale_inv"), 128, 128, dequantized.data());
        convert_to_f32(DType::BF16, b.at(name).data(), reference.data(), reference.size());
        double err = 0, norm = 0;
        for (size_t i = 0; i < reference.size(); ++i) {
          err += (dequantized[i] - reference[i]) * (dequantized[i] - reference[i]);
          norm += reference[i] * reference[i];
        }
        EXPECT_LT(std::sqrt(err / norm), 0.05);  // E4M3 keeps 3 mantissa bits
      }
    }
  }
}

TEST(Sharding, Fp8PartitionOffTheScaleBlocksIsAClearError) {
  ModelConfig c = testing::fp8_sized(true);
  c.moe_intermediate_size = 384;  // 96 rows per rank at TP 4
  ScratchDir dir("fp8bad");
  write(c, CheckpointLayout::kQwen35VL, dir.str(), true);
  const Checkpoint ck = Checkpoint::open(dir.str());
  EXPECT_NO_THROW(load(ck, 0, 1, GdnProjectionForm::kFused));
  try {
    load(ck, 1, 4, GdnProjectionForm::kFused);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 128"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("experts.gate_up_proj"), std::string::npos) << e.what();
  }
}

// A Qwen3-Next FP8 checkpoint that quantizes in_proj_ba too: its b/a rows fall off the 128-row
// scale blocks, so the fused W_in requantizes them at load (close to the BF16 weights), and the
// split form's in_proj_ba at TP 2 is a clear error.
TEST(Sharding, Fp8QuantizedBaRowsAreRequantizedIntoW_in) {
  const ModelConfig c = testing::fp8_sized(false);
  ScratchDir fp8_dir("fp8ba"), bf16_dir("bf16ba");
  write(c, CheckpointLayout::kQwen3Next, fp8_dir.str(), true);
  write(c, CheckpointLayout::kQwen3Next, bf16_dir.str(), false);
  {  // Quantize every in_proj_ba and drop it from modules_to_not_convert.
    std::vector<std::vector<std::byte>> storage;
    std::vector<TensorToWrite> tensors;
    SafetensorsFile file(fp8_dir / "model.safetensors");
    for (const auto& t : file.tensors()) {
      tensors.push_back({t.name, t.dtype, t.shape, t.bytes});
      if (!ends_with(t.name, "in_proj_ba.weight")) continue;
      std::vector<float> values(t.numel());
      convert_to_f32(t.dtype, t.bytes.data(), values.data(), values.size());
      storage.emplace_back(values.size());
      std::vector<float> scales((t.shape[0] + 127) / 128 * ((t.shape[1] + 127) / 128));
      detail::quantize_fp8_blocks(values.data(), 1, t.shape[0], t.shape[1], 128, 128, 0, t.shape[0],
                                  reinterpret_cast<uint8_t*>(storage.back().data()), scales.data());
      tensors.back().dtype = DType::F8_E4M3;
      tensors.back().data = storage.back();
      storage.emplace_back(scales.size() * 4);
      std::memcpy(storage.back().data(), scales.data(), scales.size() * 4);
      tensors.push_back({t.name + "_scale_inv", DType::F32, {static_cast<int64_t>((t.shape[0] + 127) / 128),
                                                            static_cast<int64_t>((t.shape[1] + 127) / 128)},
                         storage.back()});
    }
    write_safetensors(fp8_dir / "rewritten.safetensors", tensors);
  }
  std::filesystem::rename(fp8_dir / "rewritten.safetensors", fp8_dir / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(fp8_dir / "config.json"));
  auto& kept = config["quantization_config"]["modules_to_not_convert"];
  kept = nlohmann::json::array({"lm_head"});
  std::ofstream(fp8_dir / "config.json") << config.dump();

  const Checkpoint fp8 = Checkpoint::open(fp8_dir.str()), bf16 = Checkpoint::open(bf16_dir.str());
  for (int world : {1, 2, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      const RankTensors q = load(fp8, rank, world, GdnProjectionForm::kFused);
      const RankTensors b = load(bf16, rank, world, GdnProjectionForm::kFused);
      const HostTensor& w = q.at("layers.0.linear_attn.in_proj");
      std::vector<float> dequantized(w.spec.numel()), reference(w.spec.numel());
      dequantize_fp8_blocks(w, q.at("layers.0.linear_attn.in_proj_scale_inv"), 128, 128, dequantized.data());
      convert_to_f32(DType::BF16, b.at("layers.0.linear_attn.in_proj").data(), reference.data(), reference.size());
      const RankDims d = rank_dims(c, rank, world);
      double err = 0, norm = 0;
      for (int64_t i = (d.conv_dim + d.value_dim) * c.hidden_size; i < w.spec.numel(); ++i) {  // the b/a rows
        err += (dequantized[i] - reference[i]) * (dequantized[i] - reference[i]);
        norm += reference[i] * reference[i];
      }
      EXPECT_LT(std::sqrt(err / norm), 0.08) << "rank " << rank << "/" << world;
    }
  }
  EXPECT_NO_THROW(load(fp8, 0, 1, GdnProjectionForm::kSplit));
  try {
    load(fp8, 0, 2, GdnProjectionForm::kSplit);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("in_proj_ba"), std::string::npos) << e.what();
  }
}

TEST(Sharding, TpThatDoesNotDivideTheHeadsIsAClearError) {
  ScratchDir dir("tpbad");
  write(testing::small_dense(), CheckpointLayout::kQwen35Text, dir.str());
  const Checkpoint ck = Checkpoint::open(dir.str());
  try {
    load(ck, 0, 3, GdnProjectionForm::kFused);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads"), std::string::npos) << e.what();
  }
}

TEST(Sharding, SpecsMatchLoadedTensors) {
  ScratchDir dir("specs");
  const ModelConfig c = testing::small_moe();
  write(c, CheckpointLayout::kQwen35VL, dir.str());
  const Checkpoint ck = Checkpoint::open(dir.str());
  for (auto form : {GdnProjectionForm::kFused, GdnProjectionForm::kSplit}) {
    const auto specs = rank_tensor_specs(ck.config(), 1, 2, form);
    const auto loaded = load_rank_weights_host(ck, 1, 2, form);
    ASSERT_EQ(specs.size(), loaded.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(specs[i].name, loaded[i].spec.name);
      EXPECT_EQ(specs[i].shape, loaded[i].spec.shape);
      EXPECT_EQ(specs[i].dtype, loaded[i].spec.dtype);
    }
  }
}

}  // namespace
}  // namespace ds::weights
