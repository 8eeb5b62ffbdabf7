// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (the Qwen2/Qwen3 family and
// any other tokenizer.json with: NFC (or no) normalizer, Split-regex and/or ByteLevel
// pre-tokenizers, a BPE model without byte_fallback, a ByteLevel decoder).
//
// encode() matches Hugging Face `tokenizers` exactly (checked against reference ids in
// tests/data/tokenizer/reference_ids.jsonl):
//   1. added tokens (special and not) are split out first, longest match wins, honouring each
//      token's single_word / lstrip / rstrip / normalized flags;
//   2. the remaining pieces are NFC-normalised (utf8proc) and split by the pre-tokenizer regex
//      (Oniguruma, Unicode properties as in the Rust `regex`/`onig` crate);
//   3. each pre-token is mapped to ByteLevel characters and merged by BPE merge rank.
// No BOS/EOS is added: Qwen's post-processor adds nothing (add_bos_token false).
//
// Thread safety: a Tokenizer is immutable after loading except for an internal, mutex-guarded
// cache of pre-token encodings; every const method may be called from many threads at once.
// Copies are cheap (shared immutable state).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds::server {

class Tokenizer {
 public:
  // tokenizer_config_json_path may be empty: then eos/pad/bos come from nothing (empty) and
  // chat_template() is empty. Throws std::runtime_error naming the file and field on bad input.
  static Tokenizer from_file(const std::string& tokenizer_json_path, const std::string& tokenizer_config_json_path = "");
  // A model or tokenizer folder: DIR/tokenizer.json and, if present, DIR/tokenizer_config.json.
  static Tokenizer from_dir(const std::string& dir);
  // Same from in-memory JSON text; `origin` names the source in error messages.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json = "",
                             const std::string& origin = "<memory>");

  // Text → ids. allow_special=true (Hugging Face default): the text of a *special* added token
  // (e.g. "<|im_start|>") becomes that token. allow_special=false: special tokens' text is
  // encoded as ordinary text (use for untrusted user content); non-special added tokens such as
  // "<think>" are still matched, as Hugging Face does with split_special_tokens=True.
  // Invalid UTF-8 in `text` throws std::invalid_argument.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;

  // Ids → text through the ByteLevel decoder; byte sequences that are not valid UTF-8 become
  // U+FFFD (like Hugging Face's errors="replace"). skip_special drops special added tokens.
  // An id outside [0, vocab_size()) throws std::out_of_range.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes one token stands for (ByteLevel-decoded; may be an incomplete UTF-8 sequence).
  // Added tokens give their content. Throws std::out_of_range for a bad id.
  const std::string& token_bytes(int32_t id) const;

  // One past the highest id (vocab + added tokens): 151669 for Qwen3. The model's embedding may
  // be larger (padded); ids in that padding are rejected by decode.
  int32_t vocab_size() const;
  // Id of a vocab entry or added token by its exact string form (ByteLevel form for vocab
  // entries, e.g. "Ġthe"; content for added tokens, e.g. "<|im_end|>").
  std::optional<int32_t> token_id(std::string_view token) const;
  bool is_special(int32_t id) const;      // added token with "special": true
  bool is_added_token(int32_t id) const;  // any added token (special or not, e.g. <think>)

  // From tokenizer_config.json: eos_token (and, when distinct, pad_token is NOT an eos).
  // Qwen3: eos_token_ids() == {151645 <|im_end|>}; callers usually also stop at
  // <|endoftext|> (151643) — generation_config.json lists both; merge those in the caller.
  const std::vector<int32_t>& eos_token_ids() const;
  std::optional<int32_t> pad_token_id() const;
  std::optional<int32_t> bos_token_id() const;
  // The raw chat_template string (informational; formatting is implemented in chat_format.h).
  const std::string& chat_template() const;
  // tokenizer_config.json model_max_length, if given.
  std::optional<int64_t> model_max_length() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ds::server
