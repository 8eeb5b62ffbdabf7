// Incremental parser of a text/event-stream body (the SSE framing OpenAI-compatible servers
// stream completions in). Bytes arrive in arbitrary pieces — a line, an event, even a CRLF, may
// be split across reads — so the parser keeps the unfinished tail between feeds.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds::bench {

class SseParser {
 public:
  // Consumes `bytes` and returns the data of every event completed by them, in order. An event's
  // data is its `data:` lines joined by '\n'; comments (':'), other fields and events without
  // data are skipped.
  std::vector<std::string> feed(std::string_view bytes);

  // True when bytes of an unfinished event are pending (a stream that ends here was cut).
  bool has_partial_event() const { return !line_.empty() || has_data_; }

 private:
  void end_line(std::vector<std::string>& events);

  std::string line_;   // the current line, without its terminator
  std::string data_;   // data of the current event
  bool has_data_ = false;
  bool after_cr_ = false;  // the last byte was '\r': a following '\n' belongs to the same break
};

}  // namespace ds::bench
