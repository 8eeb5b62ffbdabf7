// Internal: how each per-rank tensor is assembled from blocks of checkpoint tensors. One plan
// drives rank_tensor_specs (shapes only), the checkpoint loader and the sharding tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "weights/model_config.h"
#include "weights/rank_weights.h"

namespace ds::weights::detail {

// Every tensor seen as [batches, rows, cols]: 1-D [n] -> [1,1,n]; 2-D [r,c] -> [1,r,c];
// 3-D [b,r,c] as is (conv1d [C,1,K] is planned as [1,C,K]).
struct MatrixShape {
  int64_t batches = 1, rows = 1, cols = 1;
};
MatrixShape matrix_shape(const std::vector<int64_t>& shape);

// Copies source[src_batch + b][src_row + i][src_col + j] to dst[dst_batch + b][dst_row + i][dst_col + j]
// for b < batches, i < rows, j < cols.
struct Piece {
  std::string source;  // canonical checkpoint name
  int64_t src_batch = 0, src_row = 0, src_col = 0;
  int64_t dst_batch = 0, dst_row = 0, dst_col = 0;
  int64_t batches = 1, rows = 0, cols = 0;
  // Into an FP8 tensor: off the scale blocks, quantize at load into blocks of its own (the few
  // b/a rows of a fused W_in) rather than fail.
  bool requantize_off_blocks = false;
};

struct SourceSpec {
  std::vector<int64_t> shape;  // as stored
  MatrixShape matrix;          // as the pieces address it
};

struct PlannedTensor {
  TensorSpec spec;
  std::vector<Piece> pieces;
  bool has_scale = false;  // F8_E4M3 with a "<name>_scale_inv" spec right after it
};

enum class ExpertsLayout { kFused3D, kPerExpert };

struct RankPlan {
  std::vector<PlannedTensor> tensors;
  std::map<std::string, SourceSpec> sources;  // every checkpoint tensor the model reads (FP8 scales aside)
};

RankPlan plan_rank(const ModelConfig& config, int rank, int world, GdnProjectionForm form, ExpertsLayout experts);

TensorSpec scale_spec(const TensorSpec& weight, const Fp8Config& fp8);
std::string scale_name(const std::string& weight_name);  // "<name>_scale_inv"
// Whether modules_to_not_convert keeps `module` (canonical, e.g. "layers.3.linear_attn.in_proj_b") unquantized.
bool kept_unquantized(const Fp8Config& fp8, const std::string& module);

}  // namespace ds::weights::detail
