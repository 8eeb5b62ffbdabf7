// IncrementalDetokenizer: never a broken UTF-8 sequence on the way out, and the pieces always add
// up to Tokenizer::decode of the whole sequence.
#include <gtest/gtest.h>

#include <random>

#include "server/tokenizer/detokenizer.h"
#include "server/tokenizer/utf8.h"
#include "tests/unit/server/tokenizer_test_data.h"

namespace ds::server {
namespace {

using testing::qwen3_tokenizer;

constexpr const char* kFffd = "\xEF\xBF\xBD";

// The ids of the single-byte ByteLevel tokens spelling `bytes` (one token per byte).
std::vector<int32_t> byte_tokens(const Tokenizer& tok, std::string_view bytes) {
  std::vector<int32_t> ids;
  for (char c : bytes) {
    const auto b = static_cast<uint8_t>(c);
    std::optional<int32_t> found;
    for (int32_t id = 0; id < tok.vocab_size() && !found; ++id) {
      if (tok.token_bytes(id) == std::string(1, static_cast<char>(b)) && !tok.is_added_token(id)) found = id;
    }
    if (!found) throw std::runtime_error("no byte token for byte " + std::to_string(b));
    ids.push_back(*found);
  }
  return ids;
}

TEST(Utf8, ReplacesMaximalInvalidSubparts) {
  // The example of Unicode §3.9 (Table 3-8).
  EXPECT_EQ(replace_invalid_utf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            std::string("a") + kFffd + kFffd + kFffd + "b" + kFffd + "c" + kFffd + kFffd + "d");
  EXPECT_EQ(replace_invalid_utf8("ok 你好 😀"), "ok 你好 😀");
  EXPECT_EQ(replace_invalid_utf8("\xC0\xAF"), std::string(kFffd) + kFffd);  // overlong '/'
  EXPECT_EQ(replace_invalid_utf8("\xF4\x90\x80\x80"), std::string(kFffd) + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(replace_invalid_utf8("\xE4\xBD"), kFffd);  // truncated at the end: one replacement
}

TEST(Utf8, CompletePrefixHoldsBackOnlyAnIncompleteTail) {
  EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(complete_utf8_prefix("ab\xE4\xBD"), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab\xE4\xBD\xA0"), 5u);
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(complete_utf8_prefix("a\xFF"), 2u);  // invalid is not incomplete: it is emitted as U+FFFD
}

TEST(IncrementalDetokenizer, HoldsBackSplitEmojiUntilComplete) {
  const Tokenizer& tok = qwen3_tokenizer();
  IncrementalDetokenizer detok(tok, false);
  const auto ids = byte_tokens(tok, "😀");
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(detok.push(ids[0]), "");
  EXPECT_EQ(detok.push(ids[1]), "");
  EXPECT_EQ(detok.push(ids[2]), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(detok.push(ids[3]), "😀");
  EXPECT_EQ(detok.pending_bytes(), 0u);
  EXPECT_EQ(detok.flush(), "");
}

TEST(IncrementalDetokenizer, JoinsCjkBytesAcrossTokensWithText) {
  const Tokenizer& tok = qwen3_tokenizer();
  IncrementalDetokenizer detok(tok, false);
  const auto ni = byte_tokens(tok, "你");
  EXPECT_EQ(detok.push(*tok.token_id("Hello")), "Hello");
  EXPECT_EQ(detok.push(ni[0]), "");
  EXPECT_EQ(detok.push(ni[1]), "");
  EXPECT_EQ(detok.push(ni[2]), "你");
  EXPECT_EQ(detok.push(*tok.token_id("Ġworld")), " world");
}

TEST(IncrementalDetokenizer, InvalidBytesBecomeReplacementAsSoonAsCertain) {
  const Tokenizer& tok = qwen3_tokenizer();
  IncrementalDetokenizer detok(tok, false);
  EXPECT_EQ(detok.push(byte_tokens(tok, "\xFF")[0]), kFffd);  // never valid anywhere
  EXPECT_EQ(detok.push(byte_tokens(tok, "\xE4")[0]), "");     // could still become 你
  EXPECT_EQ(detok.push(*tok.token_id("Hello")), std::string(kFffd) + "Hello");
  EXPECT_EQ(detok.push(byte_tokens(tok, "\xF0")[0]), "");
  EXPECT_EQ(detok.flush(), kFffd);  // the sequence never completed
  EXPECT_EQ(detok.pending_bytes(), 0u);
}

TEST(IncrementalDetokenizer, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& tok = qwen3_tokenizer();
  IncrementalDetokenizer detok(tok, true);
  EXPECT_EQ(detok.push(151645), "");
  EXPECT_EQ(detok.push(151667), "<think>");  // added but not special
  IncrementalDetokenizer raw(tok, false);
  EXPECT_EQ(raw.push(151645), "<|im_end|>");
  EXPECT_THROW(raw.push(tok.vocab_size()), std::out_of_range);
}

// Random mixes of byte tokens, whole tokens and special tokens: every piece is valid UTF-8, and
// the pieces add up to decode() of the whole sequence.
TEST(IncrementalDetokenizer, PiecesAreValidAndAddUpToDecode) {
  const Tokenizer& tok = qwen3_tokenizer();
  const auto bytes = byte_tokens(tok, "\xE4\xBD\xA0\xF0\x9F\x98\x80\x80\xC3\xFF\x0A");
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const bool skip_special = trial % 2 == 1;
    std::vector<int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      const unsigned pick = rng() % 10;
      if (pick < 6) {
        ids.push_back(bytes[rng() % bytes.size()]);
      } else if (pick < 9) {
        ids.push_back(static_cast<int32_t>(rng() % 151643));
      } else {
        ids.push_back(151643 + static_cast<int32_t>(rng() % 26));
      }
    }
    IncrementalDetokenizer detok(tok, skip_special);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = detok.push(id);
      ASSERT_EQ(utf8::first_invalid_offset(piece), std::string_view::npos) << "trial " << trial;
      streamed += piece;
    }
    streamed += detok.flush();
    EXPECT_EQ(streamed, tok.decode(ids, skip_special)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace ds::server
