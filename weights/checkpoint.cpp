#include "weights/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace ds::weights {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The files of a sharded checkpoint and which stored tensor names each must hold.
std::map<std::string, std::vector<std::string>> read_index(const fs::path& index_path) {
  std::ifstream in(index_path);
  if (!in) throw std::runtime_error(index_path.string() + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  json index = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) throw std::runtime_error(index_path.string() + ": not a valid JSON object");
  auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object()) {
    throw std::runtime_error(index_path.string() + ": missing object \"weight_map\"");
  }
  std::map<std::string, std::vector<std::string>> files;
  for (const auto& [tensor, file] : map->items()) {
    if (!file.is_string()) {
      throw std::runtime_error(index_path.string() + ": weight_map entry of \"" + tensor + "\" is not a file name");
    }
    const auto name = file.get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      throw std::runtime_error(index_path.string() + ": weight_map entry of \"" + tensor + "\" names a bad file \"" +
                               name + "\"");
    }
    files[name].push_back(tensor);
  }
  return files;
}

}  // namespace

std::string canonical_tensor_name(const std::string& stored_name) {
  for (const char* skipped : {"model.visual.", "visual.", "mtp.", "model.mtp."}) {
    if (starts_with(stored_name, skipped)) return "";
  }
  for (const char* prefix : {"model.language_model.", "model."}) {
    if (starts_with(stored_name, prefix)) return stored_name.substr(std::string(prefix).size());
  }
  return stored_name;
}

Checkpoint Checkpoint::open(const std::string& dir) {
  Checkpoint checkpoint;
  checkpoint.dir_ = dir;
  const fs::path root(dir);
  checkpoint.config_ = parse_model_config((root / "config.json").string());

  std::map<std::string, std::vector<std::string>> expected;  // file -> stored names it must hold
  const fs::path index_path = root / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    expected = read_index(index_path);
  } else if (fs::exists(root / "model.safetensors")) {
    expected["model.safetensors"] = {};
  } else {
    throw std::runtime_error(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  for (const auto& [file_name, listed] : expected) {
    const fs::path path = root / file_name;
    if (!fs::exists(path)) {
      throw std::runtime_error(index_path.string() + ": file \"" + file_name + "\" (holding \"" +
                               (listed.empty() ? std::string() : listed.front()) + "\") does not exist");
    }
    auto file = std::make_unique<SafetensorsFile>(path.string());
    std::map<std::string, bool> present;
    for (const auto& view : file->tensors()) {
      present[view.name] = true;
      const std::string name = canonical_tensor_name(view.name);
      if (name.empty()) continue;
      if (!checkpoint.tensors_.emplace(name, &view).second) {
        throw std::runtime_error(path.string() + ": tensor \"" + view.name + "\" appears twice in " + dir +
                                 " (as \"" + name + "\")");
      }
    }
    for (const auto& stored : listed) {
      if (!present.count(stored)) {
        throw std::runtime_error(index_path.string() + ": tensor \"" + stored + "\" is listed in \"" + file_name +
                                 "\" but that file does not hold it");
      }
    }
    checkpoint.files_.push_back(std::move(file));
  }
  return checkpoint;
}

const TensorView* Checkpoint::find(const std::string& canonical_name) const {
  auto it = tensors_.find(canonical_name);
  return it == tensors_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& canonical_name) const {
  if (const TensorView* view = find(canonical_name)) return *view;
  throw std::runtime_error(dir_ + ": checkpoint has no tensor \"" + canonical_name + "\"");
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, view] : tensors_) total += view->bytes.size();
  return total;
}

const SafetensorsFile& Checkpoint::file_of(const TensorView& tensor) const {
  for (const auto& file : files_) {
    if (file->holds(tensor.bytes)) return *file;
  }
  throw std::logic_error(dir_ + ": tensor \"" + tensor.name + "\" is not in this checkpoint");
}

void Checkpoint::release_pages(const TensorView& tensor) const { file_of(tensor).release_pages(tensor.bytes); }

void Checkpoint::read(const TensorView& tensor, size_t offset, size_t size, void* dst) const {
  file_of(tensor).read(tensor.bytes.subspan(offset, size), dst);
}

}  // namespace ds::weights
