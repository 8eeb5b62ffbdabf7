#include "server/tokenizer/utf8.h"

#include <cstdint>

namespace ds::server::utf8 {

namespace {

struct LeadByte {
  size_t continuation_bytes;  // 0 for an invalid lead byte
  uint8_t second_min;         // allowed range of the first continuation byte (Table 3-7)
  uint8_t second_max;
};

LeadByte classify_lead(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};  // excludes UTF-16 surrogates
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};  // nothing above U+10FFFF
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  return {0, 0, 0};
}

}  // namespace

Step next_step(std::string_view bytes, size_t pos) {
  const auto lead = static_cast<uint8_t>(bytes[pos]);
  if (lead < 0x80) return {1, StepKind::kValid};
  const LeadByte info = classify_lead(lead);
  if (info.continuation_bytes == 0) return {1, StepKind::kInvalid};
  for (size_t k = 1; k <= info.continuation_bytes; ++k) {
    if (pos + k >= bytes.size()) return {k, StepKind::kIncomplete};
    const auto b = static_cast<uint8_t>(bytes[pos + k]);
    const uint8_t lo = k == 1 ? info.second_min : 0x80;
    const uint8_t hi = k == 1 ? info.second_max : 0xBF;
    if (b < lo || b > hi) return {k, StepKind::kInvalid};
  }
  return {info.continuation_bytes + 1, StepKind::kValid};
}

size_t first_invalid_offset(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Step step = next_step(bytes, pos);
    if (step.kind != StepKind::kValid) return pos;
    pos += step.length;
  }
  return std::string_view::npos;
}

}  // namespace ds::server::utf8
