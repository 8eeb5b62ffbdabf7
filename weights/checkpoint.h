// A Hugging Face checkpoint folder: config.json plus model.safetensors or sharded
// model-XXXXX-of-YYYYY.safetensors listed in model.safetensors.index.json.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace ds::weights {

// Canonical tensor name of a stored one: strips "model.language_model." or "model."; returns ""
// for tensors a text model skips (model.visual.*, mtp.*).
std::string canonical_tensor_name(const std::string& stored_name);

class Checkpoint {
 public:
  // Opens (maps and validates) every safetensors file of `dir`; parses dir/config.json.
  // Throws naming the file for a missing index entry, a tensor in two files, and the like.
  static Checkpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  // By canonical name ("layers.0.linear_attn.in_proj_qkv.weight", "lm_head.weight", ...).
  const TensorView* find(const std::string& canonical_name) const;
  const TensorView& get(const std::string& canonical_name) const;  // throws naming it and dir
  std::vector<std::string> names() const;                          // canonical, sorted
  uint64_t total_bytes() const;                                    // of the kept tensors
  void release_pages(const TensorView& tensor) const;              // see SafetensorsFile
  // Copies bytes [offset, offset + size) of `tensor` into `dst` (pread; see SafetensorsFile::read).
  void read(const TensorView& tensor, size_t offset, size_t size, void* dst) const;

 private:
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  const SafetensorsFile& file_of(const TensorView& tensor) const;

  std::map<std::string, const TensorView*> tensors_;  // by canonical name
};

}  // namespace ds::weights
