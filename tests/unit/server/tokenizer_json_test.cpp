// Loading arbitrary tokenizer.json files: small hand-made byte-level BPE tokenizers exercise merge
// formats and ranks, added-token flags, Split behaviours and the error messages for bad files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "server/tokenizer/regex_unicode.h"
#include "server/tokenizer/tokenizer.h"

namespace ds::server {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GPT-2's byte → character table: printable Latin-1 bytes are themselves, the rest U+0100 onwards.
std::string byte_char(int b) {
  int extra = 0;
  for (int i = 0; i < b; ++i) {
    const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
    if (!printable) ++extra;
  }
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  const int cp = printable ? b : 256 + extra;
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

int32_t byte_id(char c) { return static_cast<uint8_t>(c); }  // byte tokens take ids 0..255

// Bytes as ids 0..255, then `extra` tokens from 256 in order; ByteLevel with the GPT-2 regex.
json make_tokenizer_json(const std::vector<std::string>& extra, const json& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer load(const json& tokenizer_json, const json& config = nullptr) {
  return Tokenizer::from_json(tokenizer_json.dump(), config.is_null() ? "" : config.dump(), "test tokenizer.json");
}

const std::vector<std::string> kHelloTokens = {"he", "ll", "hell", "hello", "Ġw", "el"};

TEST(TokenizerJson, MergesAsStringsOrPairsGiveTheSameTokens) {
  const auto strings = load(make_tokenizer_json(kHelloTokens, {"h e", "l l", "he ll", "hell o", "Ġ w"}));
  const auto pairs = load(make_tokenizer_json(
      kHelloTokens, json::array({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}})));
  const std::vector<int32_t> expected = {259, 260, byte_id('o'), byte_id('r'), byte_id('l'), byte_id('d')};
  EXPECT_EQ(strings.encode("hello world"), expected);
  EXPECT_EQ(pairs.encode("hello world"), expected);
  EXPECT_EQ(strings.decode(expected), "hello world");
  EXPECT_EQ(strings.vocab_size(), 262);
}

TEST(TokenizerJson, LowerRankMergesFirst) {
  const auto ll_first = load(make_tokenizer_json(kHelloTokens, {"l l", "e l"}));
  const auto el_first = load(make_tokenizer_json(kHelloTokens, {"e l", "l l"}));
  EXPECT_THAT(ll_first.encode("ell"), ElementsAre(byte_id('e'), 257));
  EXPECT_THAT(el_first.encode("ell"), ElementsAre(261, byte_id('l')));
  // Equal ranks resolve leftmost first: "llll" → ll ll, "lll" → ll l.
  EXPECT_THAT(ll_first.encode("llll"), ElementsAre(257, 257));
  EXPECT_THAT(ll_first.encode("lll"), ElementsAre(257, byte_id('l')));
}

TEST(TokenizerJson, HonoursAddedTokenFlags) {
  json t = make_tokenizer_json(kHelloTokens, json::array());
  t["normalizer"] = {{"type", "NFC"}};
  auto added = [](int id, const char* content, const char* flag, bool special = false) {
    json a = {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false},  {"normalized", false}, {"special", special}};
    if (flag) a[flag] = true;
    return a;
  };
  t["added_tokens"] = {added(300, "[MASK]", "lstrip"), added(301, "<x>", "rstrip"), added(302, "word", "single_word"),
                       added(303, "\u00e9", "normalized"), added(304, "<s>", nullptr, true)};
  const auto tok = load(t);
  const int32_t space = *tok.token_id("Ġ");
  EXPECT_THAT(tok.encode("a  [MASK] b"), ElementsAre(byte_id('a'), 300, space, byte_id('b')));
  EXPECT_THAT(tok.encode("<x> \t c"), ElementsAre(301, byte_id('c')));
  EXPECT_THAT(tok.encode("a word"), ElementsAre(byte_id('a'), space, 302));
  EXPECT_THAT(tok.encode("swords"), ElementsAre(byte_id('s'), byte_id('w'), byte_id('o'), byte_id('r'), byte_id('d'),
                                                byte_id('s')));
  EXPECT_THAT(tok.encode("e\u0301"), ElementsAre(303));  // matched after NFC
  EXPECT_THAT(tok.encode("<s>"), ElementsAre(304));
  EXPECT_THAT(tok.encode("<s>", /*allow_special=*/false), ElementsAre(byte_id('<'), byte_id('s'), byte_id('>')));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{304, 300, 302}, /*skip_special=*/true), "[MASK]word");
  EXPECT_TRUE(tok.is_special(304));
  EXPECT_FALSE(tok.is_special(300));
}

TEST(TokenizerJson, SplitBehaviours) {
  auto with_split = [](const char* behavior) {
    json t = make_tokenizer_json({"a-", "-b", "--"}, {"a -", "- b", "- -"});
    const json split = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}};
    const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
    t["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({split, byte_level})}};
    return load(t);
  };
  const int32_t a = byte_id('a'), b = byte_id('b'), dash = byte_id('-');
  EXPECT_THAT(with_split("Isolated").encode("a-b"), ElementsAre(a, dash, b));
  EXPECT_THAT(with_split("Removed").encode("a-b"), ElementsAre(a, b));
  EXPECT_THAT(with_split("MergedWithPrevious").encode("a-b"), ElementsAre(256, b));
  EXPECT_THAT(with_split("MergedWithNext").encode("a-b"), ElementsAre(a, 257));
  EXPECT_THAT(with_split("Isolated").encode("a--b"), ElementsAre(a, dash, dash, b));
  EXPECT_THAT(with_split("Contiguous").encode("a--b"), ElementsAre(a, 258, b));
}

TEST(TokenizerJson, ReadsEosPadAndBosFromConfig) {
  json t = make_tokenizer_json(kHelloTokens, json::array());
  t["added_tokens"] = {{{"id", 262}, {"content", "<eos>"}, {"special", true}},
                       {{"id", 263}, {"content", "<pad>"}, {"special", true}}};
  const auto tok = load(t, {{"eos_token", {{"content", "<eos>"}, {"__type", "AddedToken"}}}, {"pad_token", "<pad>"}});
  EXPECT_THAT(tok.eos_token_ids(), ElementsAre(262));
  EXPECT_EQ(tok.pad_token_id(), 263);
  EXPECT_EQ(tok.bos_token_id(), std::nullopt);
}

void expect_load_error(const json& t, const std::string& message, const json& config = nullptr) {
  try {
    load(t, config);
    ADD_FAILURE() << "loaded a bad tokenizer; expected an error containing: " << message;
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(message));
    EXPECT_THAT(e.what(), HasSubstr("test tokenizer.json"));
  }
}

TEST(TokenizerJson, BadFilesGiveErrorsNamingTheProblem) {
  const json good = make_tokenizer_json(kHelloTokens, {"h e"});
  expect_load_error(make_tokenizer_json(kHelloTokens, {"h zz"}), "model.merges entry 0");
  json t = good;
  t["normalizer"] = {{"type", "Lowercase"}};
  expect_load_error(t, "normalizer type \"Lowercase\"");
  t = good;
  t["decoder"] = nullptr;
  expect_load_error(t, "decoder must be ByteLevel");
  t = good;
  t["model"]["type"] = "WordPiece";
  expect_load_error(t, "model.type \"WordPiece\"");
  t = good;
  t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_load_error(t, "does not compile");
  expect_load_error(good, "eos_token \"<nope>\"", {{"eos_token", "<nope>"}});
  EXPECT_THROW(Tokenizer::from_json("{not json", "", "x"), std::runtime_error);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), std::runtime_error);
}

TEST(RegexUnicode, WidensLetterAndNumberPropertiesOnly) {
  const std::string outside = widen_unicode_properties(R"(\p{L}+)");
  EXPECT_THAT(outside, ::testing::StartsWith(R"([\p{L}\x{1C89}-\x{1C8A})"));
  EXPECT_THAT(outside, ::testing::EndsWith("]+"));
  const std::string inside = widen_unicode_properties(R"([^\s\p{N}])");
  EXPECT_THAT(inside, ::testing::StartsWith(R"([^\s\p{N}\x{10D40}-\x{10D49})"));
  EXPECT_EQ(std::count(inside.begin(), inside.end(), '['), 1);
  EXPECT_EQ(widen_unicode_properties(R"(\\p{L}\p{Lu}\[)"), R"(\\p{L}\p{Lu}\[)");
}

}  // namespace
}  // namespace ds::server
