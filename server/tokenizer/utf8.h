// UTF-8 scanning shared by the tokenizer (input validation, decode) and the detokenizer.
// Well-formedness follows Unicode Table 3-7; invalid input is split into "maximal subparts"
// (Unicode §3.9, the rule of Rust's from_utf8_lossy and Python's errors="replace"), each of
// which becomes one U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ds::server::utf8 {

enum class StepKind {
  kValid,       // a complete, well-formed character of `length` bytes
  kInvalid,     // a maximal invalid subpart of `length` bytes: replace with one U+FFFD
  kIncomplete,  // a well-formed prefix of `length` bytes that reaches the end of the input
};

struct Step {
  size_t length;
  StepKind kind;
};

// Classifies the bytes starting at `pos` (< bytes.size()).
Step next_step(std::string_view bytes, size_t pos);

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Offset of the first byte that is not part of a well-formed character, or npos if valid.
size_t first_invalid_offset(std::string_view bytes);

}  // namespace ds::server::utf8
