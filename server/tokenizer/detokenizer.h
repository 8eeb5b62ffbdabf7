// Streaming ids → text for one sequence. Never emits a broken UTF-8 sequence: bytes of an
// incomplete character (an emoji or CJK character split over byte tokens) are held back until
// the character completes. Bytes that can never become valid UTF-8 are replaced by U+FFFD as
// soon as that is certain (per maximal invalid subpart, the same rule as Tokenizer::decode), so
//   push(ids[0]) + ... + push(ids[n-1]) + flush() == tokenizer.decode(ids, skip_special)
// for every id sequence. flush() turns a still-incomplete tail into U+FFFD.
#pragma once

#include <cstdint>
#include <string>

#include "server/tokenizer/tokenizer.h"

namespace ds::server {

class IncrementalDetokenizer {
 public:
  // Keeps a reference: the Tokenizer must outlive this object.
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special);

  // Appends one generated id; returns the newly complete text (possibly empty).
  // Throws std::out_of_range for an id outside the vocabulary.
  std::string push(int32_t id);
  // End of sequence: returns whatever is held back, incomplete sequences as U+FFFD.
  std::string flush();
  // Number of bytes currently held back (an incomplete UTF-8 sequence, at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// Length of the longest prefix of `bytes` that ends on a UTF-8 character boundary, treating an
// incomplete-but-so-far-valid sequence at the end as not yet complete. Exposed for tests.
size_t complete_utf8_prefix(std::string_view bytes);
// `bytes` with every maximal invalid subpart replaced by U+FFFD (Unicode §3.9 / WHATWG rule).
std::string replace_invalid_utf8(std::string_view bytes);

}  // namespace ds::server
