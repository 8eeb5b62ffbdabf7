#include "server/tokenizer/tokenizer.h"

#include <oniguruma.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "server/tokenizer/detokenizer.h"
#include "server/tokenizer/regex_unicode.h"
#include "server/tokenizer/utf8.h"

namespace ds::server {

namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw std::runtime_error("tokenizer " + origin + ": " + what);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes the character starting at `pos` of well-formed UTF-8 and sets `length` to its size.
char32_t decode_code_point(std::string_view s, size_t pos, size_t& length) {
  const auto b = static_cast<uint8_t>(s[pos]);
  length = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  char32_t cp = length == 1 ? b : length == 2 ? (b & 0x1F) : length == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < length && pos + k < s.size(); ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[pos + k]) & 0x3F);
  return cp;
}

// GPT-2's reversible byte ↔ printable-character alphabet used by ByteLevel: printable Latin-1
// bytes stand for themselves, the other 68 bytes map to U+0100 onwards in byte order.
struct ByteLevelAlphabet {
  static constexpr char32_t kCharLimit = 256 + 68;  // every alphabet character is below this
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, kCharLimit> char_to_byte;  // -1: not an alphabet character

  ByteLevelAlphabet() {
    char32_t next_extra = 256;
    char_to_byte.fill(-1);
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next_extra++;
      append_utf8(byte_to_utf8[b], cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelAlphabet& byte_level() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_level().byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

// ByteLevel decoder rule: a token whose every character belongs to the alphabet becomes those
// bytes; any other token is passed through as its own UTF-8 text.
std::string from_byte_level(const std::string& token) {
  std::string out;
  size_t length = 0;
  for (size_t pos = 0; pos < token.size(); pos += length) {
    const char32_t cp = decode_code_point(token, pos, length);
    const int byte = cp < ByteLevelAlphabet::kCharLimit ? byte_level().char_to_byte[cp] : -1;
    if (byte < 0) return token;
    out += static_cast<char>(byte);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Normalizer: a chain of Unicode normalisation forms through utf8proc.

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

std::string normalize(std::string_view text, NormalForm form) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    return std::string(text);  // ASCII is invariant under every normal form
  }
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNFC: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::kNFD: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::kNFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::kNFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* mapped = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                              static_cast<utf8proc_ssize_t>(text.size()), &mapped, static_cast<utf8proc_option_t>(options));
  if (n < 0) throw std::invalid_argument(std::string("unicode normalisation failed: ") + utf8proc_errmsg(n));
  std::string out(reinterpret_cast<char*>(mapped), static_cast<size_t>(n));
  std::free(mapped);
  return out;
}

void parse_normalizer(const json& node, const std::string& origin, std::vector<NormalForm>& forms) {
  if (node.is_null()) return;
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const auto& child : node.at("normalizers")) parse_normalizer(child, origin, forms);
  } else if (type == "NFC") {
    forms.push_back(NormalForm::kNFC);
  } else if (type == "NFD") {
    forms.push_back(NormalForm::kNFD);
  } else if (type == "NFKC") {
    forms.push_back(NormalForm::kNFKC);
  } else if (type == "NFKD") {
    forms.push_back(NormalForm::kNFKD);
  } else {
    fail(origin, "normalizer type \"" + type + "\" is not supported (NFC, NFD, NFKC, NFKD, Sequence)");
  }
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer regexes through Oniguruma, with the same syntax and options as the Rust `onig`
// crate that Hugging Face tokenizers uses (OnigDefaultSyntax, UTF-8, no options), and its
// Unicode 16 letters and digits (regex_unicode.h).

class OnigRegex {
 public:
  OnigRegex(const std::string& original_pattern, const std::string& origin) {
    const std::string pattern = widen_unicode_properties(original_pattern);
    static std::once_flag init_once;
    std::call_once(init_once, [] {
      OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
      onig_initialize(encodings, 1);
    });
    OnigErrorInfo error_info;
    const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
    const int rc = onig_new(&regex_, begin, begin + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                            ONIG_SYNTAX_DEFAULT, &error_info);
    if (rc != ONIG_NORMAL) {
      OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(message, rc, &error_info);
      fail(origin, "pre-tokenizer regex /" + original_pattern + "/ does not compile: " + reinterpret_cast<char*>(message));
    }
  }
  ~OnigRegex() { onig_free(regex_); }
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // Calls on_match(begin, end) for every non-empty, non-overlapping match, left to right.
  void for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const {
    OnigRegion* region = onig_region_new();
    const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
    const auto* end = str + text.size();
    size_t pos = 0;
    while (pos < text.size()) {
      const int found = onig_search(regex_, str, end, str + pos, end, region, ONIG_OPTION_NONE);
      if (found == ONIG_MISMATCH) break;
      if (found < 0) {
        onig_region_free(region, 1);
        OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(message, found);
        throw std::runtime_error(std::string("pre-tokenizer regex search failed: ") + reinterpret_cast<char*>(message));
      }
      const auto match_begin = static_cast<size_t>(region->beg[0]);
      const auto match_end = static_cast<size_t>(region->end[0]);
      if (match_end > match_begin) {
        on_match(match_begin, match_end);
        pos = match_end;
      } else {
        pos = match_begin + utf8::next_step(text, match_begin).length;  // step over an empty match
      }
    }
    onig_region_free(region, 1);
  }

 private:
  regex_t* regex_ = nullptr;
};

std::string escape_regex_literal(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// The GPT-2 pattern ByteLevel applies when its use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  std::unique_ptr<OnigRegex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel only
};

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Splits `piece` by `step` the way Hugging Face's Split pre-tokenizer does.
void apply_split(const PreTokenizerStep& step, std::string_view piece, std::vector<std::string>& out) {
  std::vector<Segment> segments;
  size_t last = 0;
  step.regex->for_each_match(piece, [&](size_t b, size_t e) {
    if (b > last) segments.push_back({last, b, false});
    segments.push_back({b, e, true});
    last = e;
  });
  if (last < piece.size()) segments.push_back({last, piece.size(), false});
  if (step.invert) {
    for (auto& s : segments) s.is_match = !s.is_match;
  }

  std::vector<Segment> kept;
  switch (step.behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& s : segments) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case SplitBehavior::kIsolated:
      kept = segments;
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : segments) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const auto& s : segments) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const auto& s : kept) {
    if (s.end > s.begin) out.emplace_back(piece.substr(s.begin, s.end - s.begin));
  }
}

SplitBehavior parse_split_behavior(const std::string& name, const std::string& origin) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail(origin, "Split behavior \"" + name + "\" is unknown");
}

void parse_pre_tokenizer(const json& node, const std::string& origin, std::vector<PreTokenizerStep>& steps,
                         bool& saw_byte_level) {
  if (node.is_null()) return;
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const auto& child : node.at("pretokenizers")) parse_pre_tokenizer(child, origin, steps, saw_byte_level);
  } else if (type == "Split") {
    const auto& pattern = node.at("pattern");
    std::string regex;
    if (pattern.contains("Regex")) {
      regex = pattern.at("Regex").get<std::string>();
    } else if (pattern.contains("String")) {
      regex = escape_regex_literal(pattern.at("String").get<std::string>());
    } else {
      fail(origin, "pre_tokenizer Split.pattern needs \"Regex\" or \"String\"");
    }
    PreTokenizerStep step;
    step.regex = std::make_unique<OnigRegex>(regex, origin);
    step.behavior = parse_split_behavior(node.value("behavior", "Isolated"), origin);
    step.invert = node.value("invert", false);
    steps.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    saw_byte_level = true;
    PreTokenizerStep step;
    step.add_prefix_space = node.value("add_prefix_space", false);
    if (node.value("use_regex", true)) step.regex = std::make_unique<OnigRegex>(kGpt2Pattern, origin);
    steps.push_back(std::move(step));
  } else {
    fail(origin, "pre_tokenizer type \"" + type + "\" is not supported (Split, ByteLevel, Sequence)");
  }
}

// ---------------------------------------------------------------------------------------------

struct AddedToken {
  int32_t id;
  std::string content;  // as matched: normalised when `normalized` is set
  bool single_word, lstrip, rstrip, normalized, special;
};

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Word characters for single_word: alphanumeric or underscore.
bool is_word_char(char32_t c) {
  if (c == '_') return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  switch (category) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// The code point that ends at byte offset `end` (> 0) / starts at `begin`, of valid UTF-8.
char32_t code_point_before(std::string_view s, size_t end, size_t& begin_out) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80) --b;
  begin_out = b;
  size_t length;
  return decode_code_point(s, b, length);
}

char32_t code_point_at(std::string_view s, size_t begin, size_t& end_out) {
  size_t length;
  const char32_t cp = decode_code_point(s, begin, length);
  end_out = begin + length;
  return cp;
}

struct MergeRule {
  uint32_t rank;
  int32_t merged_id;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open tokenizer file " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A piece of input: either plain text still to be tokenized or an added token already matched.
struct Piece {
  std::string text;
  int32_t added_id = -1;
};

constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheMaxEntries = 1 << 16;

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  std::vector<std::string> id_to_token;  // string form: ByteLevel form for vocab, content for added tokens
  std::vector<std::string> id_to_bytes;  // what each id decodes to
  std::vector<uint8_t> id_valid;         // 0 for holes in the id space
  std::vector<uint8_t> id_special;
  std::vector<uint8_t> id_added;
  std::unordered_map<std::string, int32_t> token_to_id;
  std::array<int32_t, 256> byte_token_id{};  // BPE's initial symbol for each byte
  std::unordered_map<uint64_t, MergeRule> merges;
  bool ignore_merges = false;

  std::vector<NormalForm> normal_forms;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<AddedToken> raw_added;         // matched before normalisation
  std::vector<AddedToken> normalized_added;  // matched in normalised text

  std::vector<int32_t> eos_ids;
  std::optional<int32_t> pad_id, bos_id;
  std::string chat_template;
  std::optional<int64_t> model_max_length;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> word_cache;

  std::string apply_normalizer(std::string_view text) const {
    std::string out(text);
    for (NormalForm form : normal_forms) out = normalize(out, form);
    return out;
  }

  void split_added_tokens(const std::string& text, const std::vector<AddedToken>& tokens, bool allow_special,
                          std::vector<Piece>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  std::vector<int32_t> bpe(std::string_view word) const;

  void load_model(const json& model);
  void load_added_tokens(const json& added_tokens);
  void load_config(const json& config);
  std::optional<int32_t> config_token(const json& config, const char* field) const;
};

// Leftmost-longest matching of added tokens (like the aho-corasick automaton Hugging Face builds),
// then its filters: skipped special tokens, single_word boundaries, lstrip/rstrip whitespace.
void Tokenizer::Impl::split_added_tokens(const std::string& text, const std::vector<AddedToken>& tokens,
                                         bool allow_special, std::vector<Piece>& out) const {
  if (tokens.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  size_t emitted = 0;  // end of the text already pushed to `out`
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* best = nullptr;
    for (const auto& token : tokens) {
      if (token.content.size() > (best ? best->content.size() : 0) &&
          text.compare(pos, token.content.size(), token.content) == 0) {
        best = &token;
      }
    }
    if (!best) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + best->content.size();
    pos = stop;  // matches never overlap, whether or not this one is kept
    if (best->special && !allow_special) continue;
    if (best->single_word) {
      size_t unused;
      const bool word_before = start > 0 && is_word_char(code_point_before(text, start, unused));
      const bool word_after = stop < text.size() && is_word_char(code_point_at(text, stop, unused));
      if (word_before || word_after) continue;
    }
    if (best->lstrip) {
      size_t b;
      while (start > emitted && is_unicode_whitespace(code_point_before(text, start, b))) start = b;
    }
    if (best->rstrip) {
      size_t e;
      while (stop < text.size() && is_unicode_whitespace(code_point_at(text, stop, e))) stop = e;
      pos = stop;
    }
    if (start > emitted) out.push_back({text.substr(emitted, start - emitted), -1});
    out.push_back({"", best->id});
    emitted = stop;
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted), -1});
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<std::string> pieces{std::string(text)};
  for (const auto& step : pre_tokenizer) {
    std::vector<std::string> next;
    for (auto& piece : pieces) {
      if (step.add_prefix_space && !piece.starts_with(' ')) piece.insert(piece.begin(), ' ');
      if (step.regex) {
        apply_split(step, piece, next);
      } else {
        next.push_back(std::move(piece));
      }
    }
    pieces = std::move(next);
  }
  for (const auto& word : pieces) encode_word(word, ids);
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() == 1) {
    ids.push_back(byte_token_id[static_cast<uint8_t>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex);
    auto it = word_cache.find(std::string(word));
    if (it != word_cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = bpe(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex);
    if (word_cache.size() >= kCacheMaxEntries) word_cache.clear();
    word_cache.emplace(std::string(word), std::move(word_ids));
  }
}

// Byte-pair merging in rank order, leftmost first among equal ranks, with a heap of candidate
// merges and lazy invalidation: O(n log n) for an n-byte word (Hugging Face's Word::merge_all).
std::vector<int32_t> Tokenizer::Impl::bpe(std::string_view word) const {
  if (ignore_merges) {
    auto it = token_to_id.find(to_byte_level(word));
    if (it != token_to_id.end()) return {it->second};
  }
  const int n = static_cast<int>(word.size());
  std::vector<int32_t> symbol(n);
  std::vector<int> prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    symbol[i] = byte_token_id[static_cast<uint8_t>(word[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    uint32_t rank;
    int pos;
    int32_t merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    auto it = merges.find(pair_key(symbol[left], symbol[next[left]]));
    if (it != merges.end()) queue.push({it->second.rank, left, it->second.merged_id});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const int right = next[top.pos];
    auto it = merges.find(pair_key(symbol[top.pos], symbol[right]));
    if (it == merges.end() || it->second.merged_id != top.merged_id) continue;  // stale candidate
    symbol[top.pos] = top.merged_id;
    alive[right] = 0;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    consider(prev[top.pos]);
    consider(top.pos);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(symbol[i]);
  return out;
}

void Tokenizer::Impl::load_model(const json& model) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") fail(origin, "model.type \"" + type + "\" is not supported (BPE only)");
  if (model.value("byte_fallback", false)) fail(origin, "model.byte_fallback BPE is not supported (byte-level BPE only)");
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(field) && model[field].is_string() && !model[field].get<std::string>().empty()) {
      fail(origin, std::string("model.") + field + " is not supported");
    }
  }
  ignore_merges = model.value("ignore_merges", false);

  const auto& vocab = model.at("vocab");
  if (!vocab.is_object()) fail(origin, "model.vocab must be an object of token → id");
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) max_id = std::max(max_id, id.get<int32_t>());
  id_to_token.resize(max_id + 1);
  id_valid.assign(max_id + 1, 0);
  token_to_id.reserve(vocab.size() * 2);
  for (const auto& [token, id_json] : vocab.items()) {
    const auto id = id_json.get<int32_t>();
    if (id < 0) fail(origin, "model.vocab id of \"" + token + "\" is negative");
    id_to_token[id] = token;
    id_valid[id] = 1;
    token_to_id[token] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = token_to_id.find(byte_level().byte_to_utf8[b]);
    if (it == token_to_id.end()) fail(origin, "model.vocab lacks the ByteLevel token for byte " + std::to_string(b));
    byte_token_id[b] = it->second;
  }

  const auto& merge_list = model.at("merges");
  merges.reserve(merge_list.size() * 2);
  uint32_t rank = 0;
  for (const auto& merge : merge_list) {
    std::string left, right;
    if (merge.is_string()) {  // "left right"
      const auto s = merge.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) fail(origin, "model.merges entry \"" + s + "\" has no space");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {  // ["left", "right"]
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail(origin, "model.merges entry " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
    }
    auto l = token_to_id.find(left), r = token_to_id.find(right), m = token_to_id.find(left + right);
    if (l == token_to_id.end() || r == token_to_id.end() || m == token_to_id.end()) {
      fail(origin, "model.merges entry " + std::to_string(rank) + " (\"" + left + "\", \"" + right +
                       "\") uses a token missing from model.vocab");
    }
    merges.try_emplace(pair_key(l->second, r->second), MergeRule{rank, m->second});
    ++rank;
  }
}

void Tokenizer::Impl::load_added_tokens(const json& added_tokens) {
  if (added_tokens.is_null()) return;
  for (const auto& entry : added_tokens) {
    AddedToken token{entry.at("id").get<int32_t>(),        entry.at("content").get<std::string>(),
                     entry.value("single_word", false),    entry.value("lstrip", false),
                     entry.value("rstrip", false),         entry.value("normalized", false),
                     entry.value("special", false)};
    if (token.id < 0) fail(origin, "added_tokens id of \"" + token.content + "\" is negative");
    if (token.content.empty()) fail(origin, "added_tokens entry " + std::to_string(token.id) + " has empty content");
    if (static_cast<size_t>(token.id) >= id_to_token.size()) {
      id_to_token.resize(token.id + 1);
      id_valid.resize(token.id + 1, 0);
    }
    id_to_token[token.id] = token.content;
    id_valid[token.id] = 1;
    token_to_id[token.content] = token.id;
    if (token.normalized) {
      token.content = apply_normalizer(token.content);
      normalized_added.push_back(token);
    } else {
      raw_added.push_back(token);
    }
  }
}

std::optional<int32_t> Tokenizer::Impl::config_token(const json& config, const char* field) const {
  if (!config.contains(field) || config[field].is_null()) return std::nullopt;
  const json& value = config[field];
  const std::string content = value.is_object() ? value.value("content", "") : value.get<std::string>();
  auto it = token_to_id.find(content);
  if (it == token_to_id.end()) {
    fail(origin, std::string("tokenizer_config ") + field + " \"" + content + "\" is not a token of tokenizer.json");
  }
  return it->second;
}

void Tokenizer::Impl::load_config(const json& config) {
  if (auto eos = config_token(config, "eos_token")) eos_ids.push_back(*eos);
  pad_id = config_token(config, "pad_token");
  bos_id = config_token(config, "bos_token");
  if (config.contains("chat_template") && config["chat_template"].is_string()) {
    chat_template = config["chat_template"].get<std::string>();
  }
  if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
    model_max_length = static_cast<int64_t>(config["model_max_length"].get<double>());
  }
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                               const std::string& origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  json root;
  try {
    root = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    fail(origin, std::string("tokenizer.json is not valid JSON: ") + e.what());
  }
  try {
    parse_normalizer(root.value("normalizer", json()), origin, impl->normal_forms);
    bool byte_level_pre_tokenizer = false;
    parse_pre_tokenizer(root.value("pre_tokenizer", json()), origin, impl->pre_tokenizer, byte_level_pre_tokenizer);
    if (!byte_level_pre_tokenizer) fail(origin, "pre_tokenizer has no ByteLevel step (byte-level BPE only)");
    const json decoder = root.value("decoder", json());
    if (!decoder.is_object() || decoder.value("type", "") != "ByteLevel") {
      fail(origin, "decoder must be ByteLevel");
    }
    impl->load_model(root.at("model"));
    impl->load_added_tokens(root.value("added_tokens", json()));

    const size_t n = impl->id_to_token.size();
    impl->id_to_bytes.resize(n);
    impl->id_special.assign(n, 0);
    impl->id_added.assign(n, 0);
    for (size_t id = 0; id < n; ++id) impl->id_to_bytes[id] = from_byte_level(impl->id_to_token[id]);
    for (const auto* list : {&impl->raw_added, &impl->normalized_added}) {
      for (const auto& token : *list) {
        impl->id_to_bytes[token.id] = impl->id_to_token[token.id];  // added tokens decode to their content
        impl->id_special[token.id] = token.special;
        impl->id_added[token.id] = 1;
      }
    }
    if (!tokenizer_config_json.empty()) {
      json config;
      try {
        config = json::parse(tokenizer_config_json);
      } catch (const json::exception& e) {
        fail(origin, std::string("tokenizer_config.json is not valid JSON: ") + e.what());
      }
      impl->load_config(config);
    }
  } catch (const json::exception& e) {
    fail(origin, std::string("unexpected tokenizer.json structure: ") + e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path, const std::string& tokenizer_config_json_path) {
  const std::string config = tokenizer_config_json_path.empty() ? std::string() : read_file(tokenizer_config_json_path);
  return from_json(read_file(tokenizer_json_path), config, tokenizer_json_path);
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  const std::string config_path = dir + "/tokenizer_config.json";
  const bool has_config = std::ifstream(config_path).good();
  return from_file(dir + "/tokenizer.json", has_config ? config_path : std::string());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  const size_t bad = utf8::first_invalid_offset(text);
  if (bad != std::string_view::npos) {
    throw std::invalid_argument("text to encode is not valid UTF-8 (at byte " + std::to_string(bad) + ")");
  }
  std::vector<Piece> raw_pieces;
  impl_->split_added_tokens(std::string(text), impl_->raw_added, allow_special, raw_pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  for (const auto& raw : raw_pieces) {
    if (raw.added_id >= 0) {
      ids.push_back(raw.added_id);
      continue;
    }
    std::vector<Piece> pieces;
    impl_->split_added_tokens(impl_->apply_normalizer(raw.text), impl_->normalized_added, allow_special, pieces);
    for (const auto& piece : pieces) {
      if (piece.added_id >= 0) {
        ids.push_back(piece.added_id);
      } else {
        impl_->encode_plain(piece.text, ids);
      }
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    const std::string& b = token_bytes(id);
    if (skip_special && impl_->id_special[id]) continue;
    bytes += b;
  }
  return replace_invalid_utf8(bytes);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !impl_->id_valid[id]) {
    throw std::out_of_range("token id " + std::to_string(id) + " is not in the vocabulary of " + impl_->origin +
                            " (size " + std::to_string(vocab_size()) + ")");
  }
  return impl_->id_to_bytes[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_to_token.size()); }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  auto it = impl_->token_to_id.find(std::string(token));
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->id_special[id];
}

bool Tokenizer::is_added_token(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->id_added[id]; }

const std::vector<int32_t>& Tokenizer::eos_token_ids() const { return impl_->eos_ids; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad_id; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
std::optional<int64_t> Tokenizer::model_max_length() const { return impl_->model_max_length; }

}  // namespace ds::server
