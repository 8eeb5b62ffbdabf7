#include "weights/rank_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>

#include "weights/fp8_blocks.h"
#include "weights/rank_plan.h"

namespace ds::weights {
namespace {

using detail::MatrixShape;
using detail::Piece;
using detail::PlannedTensor;
using detail::RankPlan;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs this large are read with pread (no page faults, no resident mapping); smaller ones are
// copied from the mapping.
constexpr size_t kPreadBytes = 256u << 10;

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

detail::ExpertsLayout detect_experts_layout(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    if (!c.layer_is_moe(i)) continue;
    const std::string prefix = "layers." + std::to_string(i) + ".mlp.experts.";
    return checkpoint.find(prefix + "gate_up_proj") ? detail::ExpertsLayout::kFused3D
                                                    : detail::ExpertsLayout::kPerExpert;
  }
  return detail::ExpertsLayout::kFused3D;
}

// Checks every tensor the plan reads (presence, shape, dtype, FP8 scales) and that the
// checkpoint holds nothing the model does not use.
void check_sources(const Checkpoint& checkpoint, const RankPlan& plan) {
  const ModelConfig& c = checkpoint.config();
  const std::string& dir = checkpoint.dir();
  std::set<std::string> used;
  for (const auto& [name, spec] : plan.sources) {
    used.insert(name);
    const TensorView* t = checkpoint.find(name);
    if (!t) throw std::runtime_error(dir + ": missing tensor \"" + name + "\" (config.json needs it)");
    if (t->shape != spec.shape) {
      throw std::runtime_error(dir + ": tensor \"" + name + "\" has shape " + shape_string(t->shape) +
                               ", config.json implies " + shape_string(spec.shape));
    }
    if (!is_float_dtype(t->dtype)) {
      throw std::runtime_error(dir + ": tensor \"" + name + "\" has dtype " + std::string(dtype_name(t->dtype)) +
                               ", expected a float dtype");
    }
    if (t->dtype == DType::F8_E5M2) {
      throw std::runtime_error(dir + ": tensor \"" + name + "\" is F8_E5M2; only E4M3 block FP8 is supported");
    }
    if (t->dtype != DType::F8_E4M3) continue;
    if (!c.fp8.enabled) {
      throw std::runtime_error(dir + ": tensor \"" + name +
                               "\" is F8_E4M3 but config.json has no fp8 quantization_config");
    }
    const std::string scale = detail::scale_name(name);
    const TensorView* s = checkpoint.find(scale);
    if (!s) throw std::runtime_error(dir + ": FP8 tensor \"" + name + "\" has no \"" + scale + "\"");
    const auto expected = detail::scale_spec(TensorSpec{name, t->dtype, t->shape}, c.fp8).shape;
    if (s->shape != expected || !is_float_dtype(s->dtype) || s->dtype == DType::F8_E4M3) {
      throw std::runtime_error(dir + ": scale \"" + scale + "\" has shape " + shape_string(s->shape) + " and dtype " +
                               std::string(dtype_name(s->dtype)) + ", expected " + shape_string(expected) +
                               " of F32 or BF16 for " + std::to_string(c.fp8.block_rows) + "x" +
                               std::to_string(c.fp8.block_cols) + " blocks");
    }
    used.insert(scale);
  }
  std::vector<std::string> unknown;
  for (const auto& name : checkpoint.names()) {
    if (used.count(name) || (c.tie_word_embeddings && name == "lm_head.weight")) continue;
    unknown.push_back(name);
  }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 8; ++i) list += (i ? ", \"" : "\"") + unknown[i] + "\"";
    if (unknown.size() > 8) list += " and " + std::to_string(unknown.size() - 8) + " more";
    throw std::runtime_error(dir + ": " + std::to_string(unknown.size()) + " tensor(s) the model does not use: " + list);
  }
}

// Fills one rank tensor (and its FP8 scales) from the mapped checkpoint.
class TensorAssembler {
 public:
  TensorAssembler(const Checkpoint& checkpoint, const RankPlan& plan, const PlannedTensor& tensor, std::byte* dst,
                  float* scale_dst)
      : ck_(checkpoint),
        plan_(plan),
        t_(tensor),
        fp8_(checkpoint.config().fp8),
        dm_(detail::matrix_shape(tensor.spec.shape)),
        dst_(dst),
        scale_dst_(scale_dst) {}

  void run() {
    int64_t covered = 0;
    for (const auto& p : t_.pieces) covered += p.batches * p.rows * p.cols;
    if (covered < t_.spec.numel()) std::memset(dst_, 0, t_.spec.nbytes());
    if (scale_dst_ && covered < t_.spec.numel()) {
      std::fill_n(scale_dst_, detail::scale_spec(t_.spec, fp8_).numel(), 1.f);
    }
    std::vector<const Piece*> to_quantize;
    for (const auto& p : t_.pieces) {
      const TensorView& src = ck_.get(p.source);
      const MatrixShape sm = plan_.sources.at(p.source).matrix;
      check_bounds(p, sm);
      const bool dst_fp8 = t_.spec.dtype == DType::F8_E4M3, src_fp8 = src.dtype == DType::F8_E4M3;
      if (dst_fp8 && (!src_fp8 || (p.requantize_off_blocks && !block_aligned(p, sm)))) {
        to_quantize.push_back(&p);
      } else if (dst_fp8) {
        copy_elements(p, src, sm);
        copy_scales(p, sm);
      } else if (src_fp8) {
        dequantize(p, src, sm);
      } else {
        copy_elements(p, src, sm);
      }
    }
    if (!to_quantize.empty()) quantize(to_quantize);
  }

 private:
  int64_t dst_index(int64_t b, int64_t r, int64_t c) const { return (b * dm_.rows + r) * dm_.cols + c; }
  static int64_t src_index(const MatrixShape& m, int64_t b, int64_t r, int64_t c) { return (b * m.rows + r) * m.cols + c; }

  void check_bounds(const Piece& p, const MatrixShape& sm) const {
    if (p.src_batch + p.batches > sm.batches || p.src_row + p.rows > sm.rows || p.src_col + p.cols > sm.cols ||
        p.dst_batch + p.batches > dm_.batches || p.dst_row + p.rows > dm_.rows || p.dst_col + p.cols > dm_.cols) {
      throw std::logic_error("rank tensor \"" + t_.spec.name + "\": piece of \"" + p.source + "\" out of bounds");
    }
  }

  // Row runs of the piece: whole batches at once when the piece spans full rows on both sides.
  template <typename F>
  void for_each_run(const Piece& p, const MatrixShape& sm, F&& f) const {
    const bool full_rows = p.cols == sm.cols && p.cols == dm_.cols;
    for (int64_t b = 0; b < p.batches; ++b) {
      if (full_rows) {
        f(src_index(sm, p.src_batch + b, p.src_row, 0), dst_index(p.dst_batch + b, p.dst_row, 0), p.rows * p.cols);
        continue;
      }
      for (int64_t r = 0; r < p.rows; ++r) {
        f(src_index(sm, p.src_batch + b, p.src_row + r, p.src_col), dst_index(p.dst_batch + b, p.dst_row + r, p.dst_col),
          p.cols);
      }
    }
  }

  void copy_elements(const Piece& p, const TensorView& src, const MatrixShape& sm) {
    const size_t src_size = dtype_size(src.dtype), dst_size = dtype_size(t_.spec.dtype);
    for_each_run(p, sm, [&](int64_t si, int64_t di, int64_t n) {
      const std::byte* from = src.bytes.data() + si * src_size;
      std::byte* to = dst_ + di * dst_size;
      if (src.dtype == t_.spec.dtype && n * src_size >= kPreadBytes) {
        ck_.read(src, si * src_size, n * src_size, to);
      } else if (src.dtype == t_.spec.dtype) {
        std::memcpy(to, from, n * src_size);
      } else {
        convert_float(src.dtype, from, t_.spec.dtype, to, n);
      }
    });
  }

  bool block_aligned_on(const Piece& p, const MatrixShape& sm, bool rows) const {
    const int64_t block = rows ? fp8_.block_rows : fp8_.block_cols;
    const int64_t s = rows ? p.src_row : p.src_col, d = rows ? p.dst_row : p.dst_col, n = rows ? p.rows : p.cols;
    const int64_t s_end = rows ? sm.rows : sm.cols, d_end = rows ? dm_.rows : dm_.cols;
    return s % block == 0 && d % block == 0 && (n % block == 0 || (s + n == s_end && d + n == d_end));
  }
  bool block_aligned(const Piece& p, const MatrixShape& sm) const {
    return block_aligned_on(p, sm, true) && block_aligned_on(p, sm, false);
  }

  void check_block_aligned(const Piece& p, const MatrixShape& sm, bool rows) const {
    if (block_aligned_on(p, sm, rows)) return;
    const int64_t block = rows ? fp8_.block_rows : fp8_.block_cols;
    const int64_t s = rows ? p.src_row : p.src_col, n = rows ? p.rows : p.cols;
    throw std::runtime_error(
        ck_.dir() + ": FP8 tensor \"" + p.source + "\": this rank's " + (rows ? "rows [" : "columns [") +
        std::to_string(s) + ", " + std::to_string(s + n) + ") for \"" + t_.spec.name + "\" do not fall on " +
        std::to_string(block) + "-wide scale blocks; choose a tensor parallel size whose per-rank parts are multiples of " +
        std::to_string(block));
  }

  void copy_scales(const Piece& p, const MatrixShape& sm) {
    check_block_aligned(p, sm, true);
    check_block_aligned(p, sm, false);
    const TensorView& scale = ck_.get(detail::scale_name(p.source));
    const int64_t br = fp8_.block_rows, bc = fp8_.block_cols;
    const MatrixShape ss{sm.batches, ceil_div(sm.rows, br), ceil_div(sm.cols, bc)};
    const MatrixShape ds{dm_.batches, ceil_div(dm_.rows, br), ceil_div(dm_.cols, bc)};
    const int64_t block_rows = ceil_div(p.rows, br), block_cols = ceil_div(p.cols, bc);
    const size_t scale_size = dtype_size(scale.dtype);
    for (int64_t b = 0; b < p.batches; ++b) {
      for (int64_t r = 0; r < block_rows; ++r) {
        const int64_t si = src_index(ss, p.src_batch + b, p.src_row / br + r, p.src_col / bc);
        const int64_t di = ((p.dst_batch + b) * ds.rows + p.dst_row / br + r) * ds.cols + p.dst_col / bc;
        convert_float(scale.dtype, scale.bytes.data() + si * scale_size, DType::F32, scale_dst_ + di, block_cols);
      }
    }
  }

  // Row r of batch b of the piece's source as fp32 (FP8: code * scale_inv of its block).
  void source_row_f32(const Piece& p, const TensorView& src, const MatrixShape& sm, int64_t b, int64_t r,
                      float* out) const {
    const int64_t sr = p.src_row + r;
    if (src.dtype != DType::F8_E4M3) {
      convert_float(src.dtype, src.bytes.data() + src_index(sm, p.src_batch + b, sr, p.src_col) * dtype_size(src.dtype),
                    DType::F32, out, p.cols);
      return;
    }
    const TensorView& scale = ck_.get(detail::scale_name(p.source));
    const int64_t br = fp8_.block_rows, bc = fp8_.block_cols;
    const MatrixShape ss{sm.batches, ceil_div(sm.rows, br), ceil_div(sm.cols, bc)};
    std::vector<float> scales(ss.cols);
    convert_float(scale.dtype, scale.bytes.data() + src_index(ss, p.src_batch + b, sr / br, 0) * dtype_size(scale.dtype),
                  DType::F32, scales.data(), ss.cols);
    const auto* codes = reinterpret_cast<const uint8_t*>(src.bytes.data()) + src_index(sm, p.src_batch + b, sr, p.src_col);
    for (int64_t c = 0; c < p.cols; ++c) out[c] = f8e4m3_to_float(codes[c]) * scales[(p.src_col + c) / bc];
  }

  // FP8 source into a BF16/F32 rank tensor.
  void dequantize(const Piece& p, const TensorView& src, const MatrixShape& sm) {
    std::vector<float> row(p.cols);
    const size_t dst_size = dtype_size(t_.spec.dtype);
    for (int64_t b = 0; b < p.batches; ++b) {
      for (int64_t r = 0; r < p.rows; ++r) {
        source_row_f32(p, src, sm, b, r, row.data());
        convert_float(DType::F32, row.data(), t_.spec.dtype,
                      dst_ + dst_index(p.dst_batch + b, p.dst_row + r, p.dst_col) * dst_size, p.cols);
      }
    }
  }

  // Unquantized sources (BF16 in_proj_b/a in an FP8 W_in), and FP8 b/a rows off the scale
  // blocks, get scale blocks of their own.
  void quantize(const std::vector<const Piece*>& pieces) {
    const int64_t br = fp8_.block_rows;
    int64_t lo = dm_.rows, hi = 0;
    for (const Piece* p : pieces) {
      if (p->dst_col != 0 || p->cols != dm_.cols || p->dst_batch != 0 || p->batches != dm_.batches) {
        throw std::runtime_error("rank tensor \"" + t_.spec.name + "\": unquantized \"" + p->source +
                                 "\" must fill whole rows to be quantized at load");
      }
      lo = std::min(lo, p->dst_row);
      hi = std::max(hi, p->dst_row + p->rows);
    }
    const int64_t block_end = std::min(dm_.rows, ceil_div(hi, br) * br);
    for (const auto& p : t_.pieces) {
      const bool quantized_here = std::find(pieces.begin(), pieces.end(), &p) != pieces.end();
      if (!quantized_here && p.dst_row < block_end && p.dst_row + p.rows > lo / br * br) {
        throw std::runtime_error("rank tensor \"" + t_.spec.name + "\": FP8 \"" + p.source +
                                 "\" shares a scale block with unquantized rows");
      }
    }
    if (lo % br != 0) {
      throw std::runtime_error("rank tensor \"" + t_.spec.name + "\": unquantized rows start at " + std::to_string(lo) +
                               ", not on a " + std::to_string(br) + "-row scale block");
    }
    std::vector<float> staged(static_cast<size_t>(dm_.batches * (block_end - lo) * dm_.cols), 0.f);
    for (const Piece* p : pieces) {
      const TensorView& src = ck_.get(p->source);
      const MatrixShape sm = plan_.sources.at(p->source).matrix;
      for (int64_t b = 0; b < p->batches; ++b) {
        for (int64_t r = 0; r < p->rows; ++r) {
          source_row_f32(*p, src, sm, b, r,
                         staged.data() + ((p->dst_batch + b) * (block_end - lo) + p->dst_row + r - lo) * dm_.cols);
        }
      }
    }
    detail::quantize_fp8_blocks(staged.data(), dm_.batches, dm_.rows, dm_.cols, fp8_.block_rows, fp8_.block_cols, lo,
                                block_end, reinterpret_cast<uint8_t*>(dst_), scale_dst_);
  }

  const Checkpoint& ck_;
  const RankPlan& plan_;
  const PlannedTensor& t_;
  const Fp8Config& fp8_;
  MatrixShape dm_;
  std::byte* dst_;
  float* scale_dst_;
};

void release_sources(const Checkpoint& checkpoint, const PlannedTensor& t) {
  std::set<std::string> done;
  for (const auto& p : t.pieces) {
    if (!done.insert(p.source).second) continue;
    checkpoint.release_pages(checkpoint.get(p.source));
    if (const TensorView* scale = checkpoint.find(detail::scale_name(p.source))) checkpoint.release_pages(*scale);
  }
}

void* checked_destination(const DestinationFn& destination, const TensorSpec& spec) {
  void* dst = destination(spec);
  if (!dst) throw std::invalid_argument("destination returned no buffer for \"" + spec.name + "\"");
  return dst;
}

// ---- dummy weights ----

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.f / 16777216.f); }  // [0, 1)
  // Irwin-Hall: the sum of four uniforms (16 bits each, from one draw), scaled to unit variance.
  // Close enough to Gaussian for weights, and several times faster than Box-Muller.
  float normal() {
    const uint64_t bits = next();
    const float sum = static_cast<float>((bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) + (bits >> 48));
    return (sum * (1.f / 65536.f) - 2.f) * 1.7320508f;
  }

 private:
  uint64_t state_;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

constexpr float kDummyFp8Spread = 32.f;  // FP8 dummy codes ~ N(0, 32²): well inside E4M3's range

enum class Init { kZeroCentredNorm, kUnitNorm, kALog, kDtBias, kEmbedding, kLinear, kFp8Scale };

Init classify(const std::string& spec_name) {
  std::string n = ends_with(spec_name, ".weight") ? spec_name.substr(0, spec_name.size() - 7) : spec_name;
  if (ends_with(n, "_scale_inv")) return Init::kFp8Scale;
  if (ends_with(n, "linear_attn.norm")) return Init::kUnitNorm;
  if (n == "norm" || ends_with(n, "layernorm") || ends_with(n, "q_norm") || ends_with(n, "k_norm")) {
    return Init::kZeroCentredNorm;
  }
  if (ends_with(n, "A_log")) return Init::kALog;
  if (ends_with(n, "dt_bias")) return Init::kDtBias;
  if (ends_with(n, "embed_tokens") || ends_with(n, "lm_head")) return Init::kEmbedding;
  return Init::kLinear;
}

}  // namespace

GdnProjectionForm parse_gdn_projection_form(const std::string& name) {
  if (name == "fused") return GdnProjectionForm::kFused;
  if (name == "split") return GdnProjectionForm::kSplit;
  throw std::invalid_argument("unknown GDN projection form \"" + name + "\" (fused | split)");
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

size_t TensorSpec::nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }

std::vector<TensorSpec> rank_tensor_specs(const ModelConfig& config, int rank, int world, GdnProjectionForm form) {
  const RankPlan plan = detail::plan_rank(config, rank, world, form, detail::ExpertsLayout::kFused3D);
  std::vector<TensorSpec> specs;
  for (const auto& t : plan.tensors) {
    specs.push_back(t.spec);
    if (t.has_scale) specs.push_back(detail::scale_spec(t.spec, config.fp8));
  }
  return specs;
}

void load_rank_weights(const Checkpoint& checkpoint, int rank, int world, GdnProjectionForm form,
                       const DestinationFn& destination) {
  const ModelConfig& config = checkpoint.config();
  const RankPlan plan = detail::plan_rank(config, rank, world, form, detect_experts_layout(checkpoint));
  check_sources(checkpoint, plan);
  for (const auto& t : plan.tensors) {
    auto* dst = static_cast<std::byte*>(checked_destination(destination, t.spec));
    float* scale_dst = nullptr;
    if (t.has_scale) scale_dst = static_cast<float*>(checked_destination(destination, detail::scale_spec(t.spec, config.fp8)));
    TensorAssembler(checkpoint, plan, t, dst, scale_dst).run();
    release_sources(checkpoint, t);
  }
}

void fill_dummy(const TensorSpec& spec, uint64_t seed, void* dst) {
  const uint64_t tensor_seed = fnv1a(spec.name) ^ (seed * 0x9e3779b97f4a7c15ull);
  const Init init = classify(spec.name);
  const int64_t fan_in = spec.shape.empty() ? 1 : std::max<int64_t>(1, spec.shape.back());
  const bool fp8 = spec.dtype == DType::F8_E4M3;
  auto value = [&](Rng& rng) -> float {
    switch (init) {
      case Init::kZeroCentredNorm: return 0.02f * rng.normal();
      case Init::kUnitNorm: return 1.f + 0.02f * rng.normal();
      case Init::kALog: return std::log(1.f + 15.f * rng.uniform());
      case Init::kDtBias: return 0.1f * rng.normal();
      case Init::kEmbedding: return 0.02f * rng.normal();
      case Init::kFp8Scale: return 1.f / (kDummyFp8Spread * std::sqrt(static_cast<float>(fan_in * 128)));
      case Init::kLinear: break;
    }
    return fp8 ? kDummyFp8Spread * rng.normal() : rng.normal() / std::sqrt(static_cast<float>(fan_in));
  };
  // Each 64k-element chunk draws from its own stream, so the values do not depend on how many
  // threads fill the tensor; real-size presets (17 GB for qwen3.5-9b) need all cores to start fast.
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = spec.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const size_t element = dtype_size(spec.dtype);
  auto fill_chunks = [&](int64_t first, int64_t step) {
    std::vector<float> values(kChunk);
    for (int64_t c = first; c < chunks; c += step) {
      Rng rng(tensor_seed + static_cast<uint64_t>(c) * 0xd1b54a32d192ed03ull);
      const int64_t start = c * kChunk, count = std::min(kChunk, n - start);
      for (int64_t i = 0; i < count; ++i) values[i] = value(rng);
      convert_float(DType::F32, values.data(), spec.dtype, static_cast<std::byte*>(dst) + start * element, count);
    }
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>({chunks, std::thread::hardware_concurrency(), 16}));
  std::vector<std::exception_ptr> errors(threads);
  auto fill_share = [&](int64_t t) {
    try {
      fill_chunks(t, threads);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(fill_share, t);
  fill_share(0);
  for (auto& w : workers) w.join();
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void fill_dummy_rank_weights(const ModelConfig& config, int rank, int world, GdnProjectionForm form, uint64_t seed,
                             const DestinationFn& destination) {
  const RankDims dims = rank_dims(config, rank, world);
  const int64_t real_rows = std::clamp<int64_t>(config.vocab_size - rank * dims.vocab_rows, 0, dims.vocab_rows);
  for (const auto& spec : rank_tensor_specs(config, rank, world, form)) {
    auto* dst = static_cast<std::byte*>(checked_destination(destination, spec));
    fill_dummy(spec, seed, dst);
    if (spec.name == "embed_tokens" || spec.name == "lm_head") {
      const size_t row_bytes = spec.nbytes() / dims.vocab_rows;
      std::memset(dst + real_rows * row_bytes, 0, (dims.vocab_rows - real_rows) * row_bytes);
    }
  }
}

namespace {

DestinationFn host_destination(std::vector<HostTensor>& out) {
  return [&out](const TensorSpec& spec) -> void* {
    out.push_back(HostTensor{spec, std::vector<std::byte>(spec.nbytes())});
    return out.back().storage.data();
  };
}

}  // namespace

std::vector<HostTensor> load_rank_weights_host(const Checkpoint& checkpoint, int rank, int world,
                                               GdnProjectionForm form) {
  std::vector<HostTensor> out;
  load_rank_weights(checkpoint, rank, world, form, host_destination(out));
  return out;
}

std::vector<HostTensor> dummy_rank_weights_host(const ModelConfig& config, int rank, int world, GdnProjectionForm form,
                                                uint64_t seed) {
  std::vector<HostTensor> out;
  fill_dummy_rank_weights(config, rank, world, form, seed, host_destination(out));
  return out;
}

void dequantize_fp8_blocks(const HostTensor& weight, const HostTensor& scale_inv, int block_rows, int block_cols,
                           float* dst) {
  if (weight.spec.dtype != DType::F8_E4M3 || scale_inv.spec.dtype != DType::F32) {
    throw std::invalid_argument("dequantize_fp8_blocks: \"" + weight.spec.name + "\" must be F8_E4M3 with F32 scales");
  }
  const MatrixShape m = detail::matrix_shape(weight.spec.shape);
  const int64_t scale_rows = ceil_div(m.rows, block_rows), scale_cols = ceil_div(m.cols, block_cols);
  if (scale_inv.spec.numel() != m.batches * scale_rows * scale_cols) {
    throw std::invalid_argument("dequantize_fp8_blocks: scale \"" + scale_inv.spec.name + "\" has " +
                                std::to_string(scale_inv.spec.numel()) + " entries, expected " +
                                std::to_string(m.batches * scale_rows * scale_cols));
  }
  const auto* codes = reinterpret_cast<const uint8_t*>(weight.data());
  const float* scales = scale_inv.as<float>();
  for (int64_t b = 0; b < m.batches; ++b) {
    for (int64_t r = 0; r < m.rows; ++r) {
      const float* scale_row = scales + (b * scale_rows + r / block_rows) * scale_cols;
      const int64_t base = (b * m.rows + r) * m.cols;
      for (int64_t c = 0; c < m.cols; ++c) dst[base + c] = f8e4m3_to_float(codes[base + c]) * scale_row[c / block_cols];
    }
  }
}

}  // namespace ds::weights
