#include "server/serve/model_source.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <stdexcept>

#include "server/workers/child_processes.h"

extern char** environ;

namespace ds::server {

namespace fs = std::filesystem;

namespace {

fs::path executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

bool has_tokenizer(const fs::path& dir) { return fs::exists(dir / "tokenizer.json"); }

// Runs `deltaserve gen-model --preset tiny --out DIR`; true when it wrote a checkpoint.
bool generate_tiny(const fs::path& out) {
  fs::path tmp = out.string() + ".tmp." + std::to_string(getpid());
  std::error_code ec;
  fs::create_directories(out.parent_path(), ec);
  std::string exe = (executable_dir() / "deltaserve").string();
  std::vector<std::string> argv = {exe, "gen-model", "--preset", "tiny", "--out", tmp.string()};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, args.data(), environ) != 0) return false;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !fs::exists(tmp / "config.json")) {
    spdlog::warn("deltaserve gen-model --preset tiny {}", describe_wait_status(status));
    fs::remove_all(tmp, ec);
    return false;
  }
  fs::rename(tmp, out, ec);  // another server may have won the race: theirs is as good
  if (ec) fs::remove_all(tmp, ec);
  return fs::exists(out / "config.json");
}

void add_eos(const nlohmann::json& value, std::vector<int32_t>& out) {
  if (value.is_number_integer()) out.push_back(value.get<int32_t>());
  if (value.is_array()) {
    for (const auto& v : value) {
      if (v.is_number_integer()) out.push_back(v.get<int32_t>());
    }
  }
}

}  // namespace

std::string find_data_dir(const std::string& configured) {
  if (!configured.empty()) return fs::absolute(configured).string();
  if (const char* env = std::getenv("DELTASERVE_DATA_DIR"); env && *env) return fs::absolute(env).string();
  fs::path exe = executable_dir();
  std::vector<fs::path> candidates = {exe / ".." / "data", exe / ".." / ".." / "data", fs::current_path() / "data"};
  std::string looked;
  for (const auto& c : candidates) {
    if (has_tokenizer(c / "tokenizer" / "qwen3")) return fs::weakly_canonical(c).string();
    looked += " " + c.string();
  }
  throw std::runtime_error("no data folder with tokenizer/qwen3/tokenizer.json found (looked at" + looked +
                           "); run deploy/setup.sh or pass --data-dir / --tokenizer");
}

ResolvedModel resolve_model(const ServeOptions& o, const std::string& data_dir) {
  ResolvedModel m;
  m.load_format = o.load_format;
  if (!o.model_dir.empty()) {
    fs::path dir = fs::absolute(o.model_dir);
    if (!fs::exists(dir / "config.json")) throw std::runtime_error("--model " + dir.string() + ": no config.json there");
    m.model_dir = dir.lexically_normal().string();
    m.served_name = dir.lexically_normal().filename().string();
    if (m.served_name.empty()) m.served_name = dir.lexically_normal().parent_path().filename().string();
  } else if (!o.preset.empty()) {
    m.preset = o.preset;
    m.served_name = o.preset;
    if (o.load_format == "auto") m.load_format = "dummy";  // a preset has no checkpoint to load
  } else {
    // The folder name carries the preset's revision: a checkpoint cached from an older `tiny`
    // preset is never served as the current one. Bump it whenever weights/ changes `tiny`.
    fs::path tiny = fs::path(data_dir) / "models" / "tiny-r2";
    if (fs::exists(tiny / "config.json") || generate_tiny(tiny)) {
      m.model_dir = tiny.string();
      spdlog::info("no --model: serving the embedded default {} (preset tiny, random weights)", m.model_dir);
    } else {
      m.preset = "tiny";
      m.load_format = "dummy";
      spdlog::warn("no --model, and {} could not be generated: falling back to --preset tiny --load-format dummy", tiny.string());
    }
    m.served_name = "tiny";
  }
  if (!o.served_model_name.empty()) m.served_name = o.served_model_name;
  if (!o.tokenizer_dir.empty()) {
    m.tokenizer_dir = o.tokenizer_dir;
  } else if (!m.model_dir.empty() && has_tokenizer(m.model_dir)) {
    m.tokenizer_dir = m.model_dir;
  } else {
    m.tokenizer_dir = (fs::path(data_dir) / "tokenizer" / "qwen3").string();
  }
  return m;
}

std::vector<int32_t> checkpoint_eos_ids(const std::string& model_dir) {
  std::vector<int32_t> ids;
  if (model_dir.empty()) return ids;
  for (const char* name : {"config.json", "generation_config.json"}) {
    fs::path path = fs::path(model_dir) / name;
    if (!fs::exists(path)) continue;
    std::ifstream in(path);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw std::runtime_error(path.string() + " is not a JSON object");
    if (j.contains("eos_token_id")) add_eos(j["eos_token_id"], ids);
    if (j.contains("text_config") && j["text_config"].is_object() && j["text_config"].contains("eos_token_id")) {
      add_eos(j["text_config"]["eos_token_id"], ids);
    }
  }
  return ids;
}

int visible_gpu_count() {
  std::error_code ec;
  int present = 0;
  for (const auto& entry : fs::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)entry;
    ++present;
  }
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!visible) return present;
  std::string list = visible;
  if (list.empty() || list.rfind("-1", 0) == 0) return 0;
  int listed = 1;
  for (char c : list) listed += c == ',';
  return std::min(present, listed);
}

std::vector<std::string> local_devices(const std::string& device, int ranks_here) {
  int gpus = device == "cpu" ? 0 : visible_gpu_count();
  if (device == "cuda" && gpus < ranks_here) {
    throw std::runtime_error("--device cuda: " + std::to_string(ranks_here) + " local ranks need as many GPUs, " +
                             std::to_string(gpus) + " visible");
  }
  std::vector<std::string> devices;
  bool use_gpus = gpus >= ranks_here && gpus > 0;
  if (device == "auto" && gpus > 0 && !use_gpus) {
    spdlog::warn("{} GPU(s) visible for {} local ranks: running every rank on the CPU", gpus, ranks_here);
  }
  for (int i = 0; i < ranks_here; ++i) devices.push_back(use_gpus ? "cuda:" + std::to_string(i) : "cpu");
  return devices;
}

}  // namespace ds::server
