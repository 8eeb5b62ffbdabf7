// Stop strings over streamed text: text that could still turn out to be the start of a stop
// string is held back, so a client never sees part of a stop string, and nothing after it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::server {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends generated text; returns the text that is now safe to emit. After a match, returns
  // the text before the stop string and matched() is set; later calls return nothing.
  std::string push(std::string_view text);
  // End of generation: the held-back text (empty after a match).
  std::string flush();
  const std::optional<std::string>& matched() const { return matched_; }

 private:
  size_t longest_partial_match_at_end() const;

  std::vector<std::string> stops_;
  std::string held_;
  std::optional<std::string> matched_;
};

}  // namespace ds::server
