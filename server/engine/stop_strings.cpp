#include "server/engine/stop_strings.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace ds::server {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) {
    if (s.empty()) throw std::invalid_argument("stop strings must not be empty");
  }
}

size_t StopStringMatcher::longest_partial_match_at_end() const {
  size_t best = 0;
  for (const auto& stop : stops_) {
    size_t max_len = std::min(stop.size() - 1, held_.size());
    for (size_t len = max_len; len > best; --len) {
      if (std::string_view(held_).substr(held_.size() - len) == std::string_view(stop).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

std::string StopStringMatcher::push(std::string_view text) {
  if (matched_) return {};
  held_.append(text);
  if (stops_.empty()) return std::exchange(held_, {});
  size_t first = std::string::npos;
  for (const auto& stop : stops_) {
    size_t pos = held_.find(stop);
    if (pos < first) {
      first = pos;
      matched_ = stop;
    }
  }
  if (first != std::string::npos) {
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  size_t keep = longest_partial_match_at_end();
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringMatcher::flush() { return std::exchange(held_, {}); }

}  // namespace ds::server
