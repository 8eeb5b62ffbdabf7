// Exact agreement with Hugging Face `tokenizers`: every corpus entry encodes to the ids that
// tests/reference/make_tokenizer_fixture.py wrote on the GPU host, and decodes to the same text.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/unit/server/tokenizer_test_data.h"

namespace ds::server {
namespace {

TEST(Qwen3TokenizerReference, EncodesCorpusExactlyLikeHuggingFace) {
  const std::string reference_path = testing::fixture_path("reference_ids.jsonl");
  ASSERT_TRUE(std::filesystem::exists(reference_path))
      << reference_path << " is missing. Generate it where Hugging Face `tokenizers` is installed:\n"
      << "  python3 tests/reference/make_tokenizer_fixture.py --tokenizer data/tokenizer/qwen3/tokenizer.json "
         "--corpus tests/data/tokenizer/corpus.jsonl --out tests/data/tokenizer/reference_ids.jsonl";
  const Tokenizer& tok = testing::qwen3_tokenizer();
  const auto corpus = testing::read_corpus();
  std::vector<nlohmann::json> rows;
  for (auto& row : testing::read_jsonl(reference_path)) {
    if (!row.contains("meta")) rows.push_back(std::move(row));
  }
  ASSERT_EQ(rows.size(), corpus.size()) << "reference_ids.jsonl is stale: regenerate it from corpus.jsonl";
  for (size_t i = 0; i < corpus.size(); ++i) {
    ASSERT_EQ(rows[i].at("id").get<std::string>(), corpus[i].id) << "reference_ids.jsonl is stale at line " << i;
    const auto expected = rows[i].at("ids").get<std::vector<int32_t>>();
    const auto ids = tok.encode(corpus[i].text);
    EXPECT_EQ(ids, expected) << "corpus entry " << corpus[i].id;
    EXPECT_EQ(tok.decode(expected), rows[i].at("decoded").get<std::string>()) << "corpus entry " << corpus[i].id;
  }
}

}  // namespace
}  // namespace ds::server
