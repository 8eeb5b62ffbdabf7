#include "server/tokenizer/detokenizer.h"

#include "server/tokenizer/utf8.h"

namespace ds::server {

namespace {

// Appends the decodable prefix of `bytes` to `out` (invalid subparts as U+FFFD) and returns how
// many bytes were consumed; an incomplete sequence at the end is left unless `final` is set.
size_t decode_prefix(std::string_view bytes, bool final, std::string& out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const utf8::Step step = utf8::next_step(bytes, pos);
    if (step.kind == utf8::StepKind::kIncomplete && !final) break;
    if (step.kind == utf8::StepKind::kValid) {
      out.append(bytes.substr(pos, step.length));
    } else {
      out.append(utf8::kReplacementCharacter);
    }
    pos += step.length;
  }
  return pos;
}

}  // namespace

size_t complete_utf8_prefix(std::string_view bytes) {
  std::string ignored;
  return decode_prefix(bytes, false, ignored);
}

std::string replace_invalid_utf8(std::string_view bytes) {
  if (utf8::first_invalid_offset(bytes) == std::string_view::npos) return std::string(bytes);
  std::string out;
  decode_prefix(bytes, true, out);
  return out;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  const std::string& bytes = tokenizer_->token_bytes(id);
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  std::string out;
  if (pending_.empty()) {  // common case: a token of whole characters passes straight through
    const size_t used = decode_prefix(bytes, false, out);
    pending_.assign(bytes, used);
    return out;
  }
  pending_ += bytes;
  const size_t used = decode_prefix(pending_, false, out);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  decode_prefix(pending_, true, out);
  pending_.clear();
  return out;
}

}  // namespace ds::server
