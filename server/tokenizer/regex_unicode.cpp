#include "server/tokenizer/regex_unicode.h"

#include <cstdio>
#include <span>

namespace ds::server {

namespace {

struct CodePointRange {
  char32_t first, last;
};

// General category L* in Unicode 16.0 but unassigned in Unicode 14.0.
constexpr CodePointRange kLettersSinceUnicode14[] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240}, {0x11380, 0x11389}, {0x1138B, 0x1138B},
    {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3},
    {0x11BC0, 0x11BE0}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF},
    {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB},
    {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};

// General category N* in Unicode 16.0 but unassigned in Unicode 14.0.
constexpr CodePointRange kNumbersSinceUnicode14[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};

// Class items (no brackets) for `property` plus its newer code points: "\p{L}\x{1C89}-\x{1C8A}...".
std::string widened_class_items(char property, std::span<const CodePointRange> additions) {
  std::string items = std::string("\\p{") + property + "}";
  char buf[32];
  for (const auto& r : additions) {
    std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", static_cast<unsigned>(r.first), static_cast<unsigned>(r.last));
    items += buf;
  }
  return items;
}

}  // namespace

std::string widen_unicode_properties(std::string_view pattern) {
  std::string out;
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const std::string_view rest = pattern.substr(i);
      const bool letter = rest.starts_with("\\p{L}");
      const bool number = rest.starts_with("\\p{N}");
      if (letter || number) {
        const std::string items = letter ? widened_class_items('L', kLettersSinceUnicode14)
                                         : widened_class_items('N', kNumbersSinceUnicode14);
        out += class_depth > 0 ? items : "[" + items + "]";
        i += 4;
        continue;
      }
      out += pattern.substr(i, 2);  // any other escape, copied whole so "\[" is not a bracket
      ++i;
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after "[" or "[^" is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

}  // namespace ds::server
