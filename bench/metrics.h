// Serving metrics of one benchmark run, defined exactly as DESIGN.md §7 (and as SGLang's
// bench_serving, so numbers are comparable). Pure functions over what the client observed:
// no clocks, no I/O, so every definition is unit-tested on hand-computed cases.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ds::bench {

// One streamed message that carried `tokens` new output tokens, received at `time`
// (seconds since the benchmark started).
struct TokenChunk {
  double time = 0;
  int tokens = 0;
};

// What the client observed for one request.
struct RequestRecord {
  int index = 0;
  int prompt_len = 0;            // tokens the client planned to send (ids) or estimated (text)
  int requested_output_len = 0;  // max_tokens asked for
  double send_time = 0;          // seconds since the benchmark started
  bool success = false;
  std::string error;             // why it failed; empty on success
  std::vector<TokenChunk> chunks;
  std::optional<int> usage_prompt_tokens;      // as reported by the server, when it did
  std::optional<int> usage_completion_tokens;
};

// Per-request latencies derived from a successful record.
struct RequestLatency {
  int input_tokens = 0;
  int output_tokens = 0;
  double ttft = 0;                 // first token − send
  double e2e = 0;                  // last token − send
  std::optional<double> tpot;      // (e2e − ttft) / (output − 1); absent for one output token
  std::vector<double> itl;         // one gap per token after the first chunk
};

// Output tokens: the server's usage count when it gave one, else the tokens seen in chunks.
int output_tokens(const RequestRecord& r);
// Input tokens: the server's usage count when it gave one, else what the client planned.
int input_tokens(const RequestRecord& r);

// Latencies of a successful request that received at least one token. A chunk carrying k tokens
// after a gap g contributes k inter-token latencies of g/k (as SGLang does), so the ITLs of a
// request always sum to e2e − ttft. Throws std::invalid_argument for a failed or empty record.
RequestLatency request_latency(const RequestRecord& r);

struct Distribution {
  double mean = 0, median = 0, p90 = 0, p99 = 0, max = 0;
  size_t count = 0;
};
// Percentiles with linear interpolation between closest ranks (numpy's default). Empty: zeros.
Distribution distribution(std::vector<double> values);

struct FailureCount {
  std::string reason;
  int count = 0;
};

struct Summary {
  int completed = 0;
  int failed = 0;
  std::vector<FailureCount> failures;  // distinct reasons, most frequent first
  double duration = 0;                 // seconds
  long long total_input_tokens = 0;    // over successful requests
  long long total_output_tokens = 0;
  double request_throughput = 0;       // successful requests / duration
  double input_throughput = 0;         // tokens / s
  double output_throughput = 0;
  double total_throughput = 0;
  double concurrency = 0;              // sum of E2E / duration
  Distribution ttft, tpot, itl, e2e;   // seconds
};

// Failed requests are counted (with their reasons) but never enter latencies or throughput.
Summary summarize(const std::vector<RequestRecord>& records, double duration);

}  // namespace ds::bench
