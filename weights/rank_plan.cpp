#include "weights/rank_plan.h"

#include <stdexcept>

#include "weights/checkpoint.h"

namespace ds::weights::detail {
namespace {

std::string layer_prefix(int layer) { return "layers." + std::to_string(layer) + "."; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Collects the plan of one rank; every add_* call appends one rank tensor.
class Planner {
 public:
  Planner(const ModelConfig& config, int rank, int world)
      : c_(config), d_(rank_dims(config, rank, world)), rank_(rank) {}

  RankPlan take() { return std::move(plan_); }

  // A checkpoint tensor the model reads, with its stored shape.
  void source(const std::string& name, std::vector<int64_t> shape) {
    MatrixShape m = matrix_shape(shape);
    if (shape.size() == 3 && shape[1] == 1 && ends_with(name, "conv1d.weight")) m = {1, shape[0], shape[2]};
    plan_.sources[name] = {std::move(shape), m};
  }

  // Rank tensor `name` of `shape`; `module` decides FP8 quantization when `linear` is set.
  void add(const std::string& name, std::vector<int64_t> shape, std::vector<Piece> pieces, bool linear,
           const std::string& module, DType dtype) {
    PlannedTensor t;
    t.spec = {name, dtype, std::move(shape)};
    if (linear && c_.fp8.enabled && !kept_unquantized(c_.fp8, module)) {
      t.spec.dtype = DType::F8_E4M3;
      t.has_scale = true;
    }
    t.pieces = std::move(pieces);
    plan_.tensors.push_back(std::move(t));
  }
  void add(const std::string& name, std::vector<int64_t> shape, std::vector<Piece> pieces, bool linear,
           const std::string& module) {
    add(name, std::move(shape), std::move(pieces), linear, module, c_.dtype);
  }

  // A whole replicated tensor: [n] or [r, c] from the source of the same shape.
  void replicated(const std::string& name, const std::string& src, std::vector<int64_t> shape, DType dtype) {
    source(src, shape);
    MatrixShape m = matrix_shape(shape);
    add(name, shape, {Piece{src, 0, 0, 0, 0, 0, 0, m.batches, m.rows, m.cols}}, false, "", dtype);
  }

  void embeddings() {
    const int64_t H = c_.hidden_size, V = c_.vocab_size;
    auto vocab_rows = [&](const std::string& name, const std::string& src) {
      source(src, {V, H});
      const int64_t first = rank_ * d_.vocab_rows;
      const int64_t rows = std::max<int64_t>(0, std::min(V, first + d_.vocab_rows) - first);
      std::vector<Piece> pieces;
      if (rows > 0) pieces.push_back(Piece{src, 0, first, 0, 0, 0, 0, 1, rows, H});
      add(name, {d_.vocab_rows, H}, std::move(pieces), false, "");
    };
    vocab_rows("embed_tokens", "embed_tokens.weight");
    if (!c_.tie_word_embeddings) vocab_rows("lm_head", "lm_head.weight");
    replicated("norm", "norm.weight", {H}, c_.dtype);
  }

  void layer(int i, GdnProjectionForm form, ExpertsLayout experts) {
    const std::string p = layer_prefix(i);
    const int64_t H = c_.hidden_size;
    replicated(p + "input_layernorm", p + "input_layernorm.weight", {H}, c_.dtype);
    if (c_.layer_types[i] == LayerType::kLinearAttention) {
      gdn(p, form);
    } else {
      attention(p);
    }
    replicated(p + "post_attention_layernorm", p + "post_attention_layernorm.weight", {H}, c_.dtype);
    if (c_.layer_is_moe(i)) {
      moe(p, experts);
    } else {
      dense_mlp(p + "mlp.", c_.intermediate_size, d_.intermediate);
    }
  }

 private:
  enum Part { kQ, kK, kV, kZ, kB, kA };
  struct PartPiece {
    Part part;
    Piece piece;
  };

  // The rows of fused W_in = [q_r; k_r; v_r; z_r; b_r; a_r] and where each comes from.
  std::vector<PartPiece> in_proj_pieces(const std::string& p) {
    const int64_t H = c_.hidden_size, dk = c_.linear_key_head_dim, dv = c_.linear_value_head_dim;
    const int64_t Hk = c_.linear_num_key_heads, Hv = c_.linear_num_value_heads;
    const int64_t K = Hk * dk, V = Hv * dv, r = Hv / Hk;
    const int64_t k0 = rank_ * d_.key_heads, v0 = rank_ * d_.value_heads;
    const int64_t Kr = d_.key_dim, Vr = d_.value_dim, Cr = d_.conv_dim, Hvr = d_.value_heads;
    auto rows = [&](Part part, const std::string& src, int64_t src_row, int64_t dst_row, int64_t n) {
      return PartPiece{part, Piece{src, 0, src_row, 0, 0, dst_row, 0, 1, n, H}};
    };
    std::vector<PartPiece> pieces;
    if (c_.gdn_layout == GdnCheckpointLayout::kSeparate) {
      const std::string qkv = p + "linear_attn.in_proj_qkv.weight", z = p + "linear_attn.in_proj_z.weight";
      const std::string b = p + "linear_attn.in_proj_b.weight", a = p + "linear_attn.in_proj_a.weight";
      source(qkv, {2 * K + V, H});
      source(z, {V, H});
      source(b, {Hv, H});
      source(a, {Hv, H});
      pieces.push_back(rows(kQ, qkv, k0 * dk, 0, Kr));
      pieces.push_back(rows(kK, qkv, K + k0 * dk, Kr, Kr));
      pieces.push_back(rows(kV, qkv, 2 * K + v0 * dv, 2 * Kr, Vr));
      pieces.push_back(rows(kZ, z, v0 * dv, Cr, Vr));
      pieces.push_back(rows(kB, b, v0, Cr + Vr, Hvr));
      pieces.push_back(rows(kA, a, v0, Cr + Vr + Hvr, Hvr));
      return pieces;
    }
    // Qwen3-Next: per key head g, qkvz rows [q_g | k_g | v_g (r·dv) | z_g (r·dv)], ba rows [b_g (r) | a_g (r)].
    const std::string qkvz = p + "linear_attn.in_proj_qkvz.weight", ba = p + "linear_attn.in_proj_ba.weight";
    const int64_t group = 2 * dk + 2 * r * dv;
    source(qkvz, {Hk * group, H});
    source(ba, {Hk * 2 * r, H});
    for (int64_t g = 0; g < d_.key_heads; ++g) {
      const int64_t base = (k0 + g) * group, ba_base = (k0 + g) * 2 * r;
      pieces.push_back(rows(kQ, qkvz, base, g * dk, dk));
      pieces.push_back(rows(kK, qkvz, base + dk, Kr + g * dk, dk));
      pieces.push_back(rows(kV, qkvz, base + 2 * dk, 2 * Kr + g * r * dv, r * dv));
      pieces.push_back(rows(kZ, qkvz, base + 2 * dk + r * dv, Cr + g * r * dv, r * dv));
      pieces.push_back(rows(kB, ba, ba_base, Cr + Vr + g * r, r));
      pieces.push_back(rows(kA, ba, ba_base + r, Cr + Vr + Hvr + g * r, r));
    }
    return pieces;
  }

  void gdn(const std::string& p, GdnProjectionForm form) {
    const int64_t H = c_.hidden_size, dk = c_.linear_key_head_dim, dv = c_.linear_value_head_dim;
    const int64_t Hk = c_.linear_num_key_heads, Hv = c_.linear_num_value_heads;
    const int64_t K = Hk * dk, V = Hv * dv, r = Hv / Hk;
    const int64_t k0 = rank_ * d_.key_heads, v0 = rank_ * d_.value_heads;
    const int64_t Kr = d_.key_dim, Vr = d_.value_dim, Cr = d_.conv_dim, Hvr = d_.value_heads;
    const std::string a = p + "linear_attn.";
    const bool separate = c_.gdn_layout == GdnCheckpointLayout::kSeparate;
    const std::string qkv_module = a + (separate ? "in_proj_qkv" : "in_proj_qkvz");
    const std::string ba_module = a + (separate ? "in_proj_b" : "in_proj_ba");

    std::vector<PartPiece> parts = in_proj_pieces(p);
    if (form == GdnProjectionForm::kFused) {
      // FP8 q/k/v/z rows with unquantized b/a rows (every published FP8 checkpoint keeps the gate
      // projections BF16): W_in becomes in_proj [q_r; k_r; v_r; z_r] (FP8) + in_proj_ba [b_r; a_r]
      // (BF16), two GEMMs into adjacent columns of one output. Quantizing b/a into W_in's own
      // blocks instead moved the logits of tiny random models by 1e-1 (dense) to 5e-1 (MoE).
      const bool ba_unquantized =
          kept_unquantized(c_.fp8, ba_module) && (!separate || kept_unquantized(c_.fp8, a + "in_proj_a"));
      const bool ba_apart = c_.fp8.enabled && !kept_unquantized(c_.fp8, qkv_module) && ba_unquantized;
      std::vector<Piece> pieces, ba;
      for (auto& pp : parts) {
        const bool gate = pp.part == kB || pp.part == kA;
        if (gate && ba_apart) {
          pp.piece.dst_row -= Cr + Vr;
          ba.push_back(pp.piece);
          continue;
        }
        pp.piece.requantize_off_blocks = gate;
        pieces.push_back(pp.piece);
      }
      add(a + "in_proj", {ba_apart ? Cr + Vr : d_.in_proj_rows, H}, std::move(pieces), true, qkv_module);
      if (ba_apart) add(a + "in_proj_ba", {2 * Hvr, H}, std::move(ba), true, ba_module);
    } else if (separate) {
      std::vector<Piece> qkvz, ba;
      for (auto& pp : parts) {
        if (pp.part == kB || pp.part == kA) {
          pp.piece.dst_row -= Cr + Vr;
          ba.push_back(pp.piece);
        } else {
          qkvz.push_back(pp.piece);
        }
      }
      add(a + "in_proj_qkvz", {Cr + Vr, H}, std::move(qkvz), true, qkv_module);
      add(a + "in_proj_ba", {2 * Hvr, H}, std::move(ba), true, ba_module);
    } else {  // the checkpoint's interleaved groups of this rank's key heads are contiguous
      const int64_t group = 2 * dk + 2 * r * dv;
      add(a + "in_proj_qkvz", {Cr + Vr, H},
          {Piece{a + "in_proj_qkvz.weight", 0, k0 * group, 0, 0, 0, 0, 1, d_.key_heads * group, H}}, true, qkv_module);
      add(a + "in_proj_ba", {2 * Hvr, H},
          {Piece{a + "in_proj_ba.weight", 0, k0 * 2 * r, 0, 0, 0, 0, 1, d_.key_heads * 2 * r, H}}, true, ba_module);
    }

    const int64_t kernel = c_.linear_conv_kernel_dim;
    const std::string conv = a + "conv1d.weight";
    source(conv, {2 * K + V, 1, kernel});
    add(a + "conv1d", {Cr, kernel},
        {Piece{conv, 0, k0 * dk, 0, 0, 0, 0, 1, Kr, kernel}, Piece{conv, 0, K + k0 * dk, 0, 0, Kr, 0, 1, Kr, kernel},
         Piece{conv, 0, 2 * K + v0 * dv, 0, 0, 2 * Kr, 0, 1, Vr, kernel}},
        false, "");
    for (const char* per_head : {"A_log", "dt_bias"}) {
      source(a + per_head, {Hv});
      add(a + per_head, {Hvr}, {Piece{a + per_head, 0, 0, v0, 0, 0, 0, 1, 1, Hvr}}, false, "", DType::F32);
    }
    replicated(a + "norm", a + "norm.weight", {dv}, c_.dtype);
    source(a + "out_proj.weight", {H, V});
    add(a + "out_proj", {H, Vr}, {Piece{a + "out_proj.weight", 0, 0, v0 * dv, 0, 0, 0, 1, H, Vr}}, true,
        a + "out_proj");
  }

  void attention(const std::string& p) {
    const int64_t H = c_.hidden_size, D = c_.head_dim;
    const int64_t q_rows_per_head = c_.attn_output_gate ? 2 * D : D;
    const int64_t h0 = static_cast<int64_t>(rank_) * d_.q_heads, Hqr = d_.q_heads;
    const std::string a = p + "self_attn.";
    source(a + "q_proj.weight", {c_.num_attention_heads * q_rows_per_head, H});
    add(a + "q_proj", {Hqr * q_rows_per_head, H},
        {Piece{a + "q_proj.weight", 0, h0 * q_rows_per_head, 0, 0, 0, 0, 1, Hqr * q_rows_per_head, H}}, true,
        a + "q_proj");
    for (const char* kv : {"k_proj", "v_proj"}) {
      const std::string src = a + kv + ".weight";
      source(src, {c_.num_key_value_heads * D, H});
      add(a + kv, {d_.kv_heads * D, H}, {Piece{src, 0, d_.first_kv_head * D, 0, 0, 0, 0, 1, d_.kv_heads * D, H}}, true,
          a + kv);
    }
    replicated(a + "q_norm", a + "q_norm.weight", {D}, c_.dtype);
    replicated(a + "k_norm", a + "k_norm.weight", {D}, c_.dtype);
    source(a + "o_proj.weight", {H, c_.num_attention_heads * D});
    add(a + "o_proj", {H, Hqr * D}, {Piece{a + "o_proj.weight", 0, 0, h0 * D, 0, 0, 0, 1, H, Hqr * D}}, true,
        a + "o_proj");
  }

  // gate_up [2I_r, H] = [gate rows; up rows] and down [H, I_r] of a dense MLP under prefix `m`.
  void dense_mlp(const std::string& m, int64_t full, int64_t per_rank) {
    const int64_t H = c_.hidden_size, i0 = rank_ * per_rank;
    source(m + "gate_proj.weight", {full, H});
    source(m + "up_proj.weight", {full, H});
    source(m + "down_proj.weight", {H, full});
    add(m + "gate_up_proj", {2 * per_rank, H},
        {Piece{m + "gate_proj.weight", 0, i0, 0, 0, 0, 0, 1, per_rank, H},
         Piece{m + "up_proj.weight", 0, i0, 0, 0, per_rank, 0, 1, per_rank, H}},
        true, m + "gate_proj");
    add(m + "down_proj", {H, per_rank}, {Piece{m + "down_proj.weight", 0, 0, i0, 0, 0, 0, 1, H, per_rank}}, true,
        m + "down_proj");
  }

  void moe(const std::string& p, ExpertsLayout layout) {
    const int64_t H = c_.hidden_size, E = c_.num_experts, Ie = c_.moe_intermediate_size;
    const int64_t Ier = d_.moe_intermediate, i0 = rank_ * Ier;
    const std::string m = p + "mlp.";
    replicated(m + "gate", m + "gate.weight", {E, H}, c_.dtype);
    std::vector<Piece> gate_up, down;
    if (layout == ExpertsLayout::kFused3D) {
      const std::string gu = m + "experts.gate_up_proj", dn = m + "experts.down_proj";
      source(gu, {E, 2 * Ie, H});
      source(dn, {E, H, Ie});
      gate_up = {Piece{gu, 0, i0, 0, 0, 0, 0, E, Ier, H}, Piece{gu, 0, Ie + i0, 0, 0, Ier, 0, E, Ier, H}};
      down = {Piece{dn, 0, 0, i0, 0, 0, 0, E, H, Ier}};
    } else {
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = m + "experts." + std::to_string(e) + ".";
        source(x + "gate_proj.weight", {Ie, H});
        source(x + "up_proj.weight", {Ie, H});
        source(x + "down_proj.weight", {H, Ie});
        gate_up.push_back(Piece{x + "gate_proj.weight", 0, i0, 0, e, 0, 0, 1, Ier, H});
        gate_up.push_back(Piece{x + "up_proj.weight", 0, i0, 0, e, Ier, 0, 1, Ier, H});
        down.push_back(Piece{x + "down_proj.weight", 0, 0, i0, e, 0, 0, 1, H, Ier});
      }
    }
    add(m + "experts.gate_up_proj", {E, 2 * Ier, H}, std::move(gate_up), true, m + "experts");
    add(m + "experts.down_proj", {E, H, Ier}, std::move(down), true, m + "experts");
    if (c_.shared_expert_intermediate_size > 0) {
      dense_mlp(m + "shared_expert.", c_.shared_expert_intermediate_size, d_.shared_intermediate);
      replicated(m + "shared_expert_gate", m + "shared_expert_gate.weight", {1, H}, c_.dtype);
    }
  }

  const ModelConfig& c_;
  RankDims d_;
  int rank_;
  RankPlan plan_;
};

}  // namespace

MatrixShape matrix_shape(const std::vector<int64_t>& shape) {
  switch (shape.size()) {
    case 1: return {1, 1, shape[0]};
    case 2: return {1, shape[0], shape[1]};
    case 3: return {shape[0], shape[1], shape[2]};
    default: throw std::invalid_argument("tensors of rank " + std::to_string(shape.size()) + " are not supported here");
  }
}

RankPlan plan_rank(const ModelConfig& config, int rank, int world, GdnProjectionForm form, ExpertsLayout experts) {
  if (static_cast<int>(config.layer_types.size()) != config.num_hidden_layers) {
    throw std::invalid_argument("model config: layer_types has " + std::to_string(config.layer_types.size()) +
                                " entries for " + std::to_string(config.num_hidden_layers) + " layers");
  }
  Planner planner(config, rank, world);
  planner.embeddings();
  for (int i = 0; i < config.num_hidden_layers; ++i) planner.layer(i, form, experts);
  return planner.take();
}

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale_inv"; }

TensorSpec scale_spec(const TensorSpec& weight, const Fp8Config& fp8) {
  MatrixShape m = matrix_shape(weight.shape);
  std::vector<int64_t> shape = {ceil_div(m.rows, fp8.block_rows), ceil_div(m.cols, fp8.block_cols)};
  if (weight.shape.size() == 3) shape.insert(shape.begin(), m.batches);
  return {scale_name(weight.name), DType::F32, shape};
}

bool kept_unquantized(const Fp8Config& fp8, const std::string& module) {
  for (const auto& entry : fp8.modules_to_not_convert) {
    const std::string m = canonical_tensor_name(entry);
    if (m.empty()) continue;
    if (module == m || module.rfind(m + ".", 0) == 0 || ends_with(module, "." + m)) return true;
  }
  return false;
}

}  // namespace ds::weights::detail
