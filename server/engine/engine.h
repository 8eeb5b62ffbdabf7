// The request lifecycle around the scheduler: a loop thread that admits submitted requests, runs
// one step at a time on the workers, turns sampled tokens into text (incremental detokenizer,
// stop strings) and hands the output to per-request streams without ever waiting on a client.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/engine/request_stream.h"
#include "server/engine/stop_strings.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/scheduler.h"
#include "server/tokenizer/detokenizer.h"
#include "server/tokenizer/tokenizer.h"

namespace ds::server {

struct GenerateInput {
  std::string request_id;  // empty: the engine assigns one
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  StopOptions stop;
  std::vector<std::string> stop_strings;
  bool skip_special_tokens = true;
};

// Runs one plan on every worker rank and returns rank 0's result; throws when a worker failed.
class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  virtual control::StepResult execute(const control::StepPlan& plan) = 0;
};

// Not ready, unhealthy, shutting down or overloaded: HTTP 503 / gRPC UNAVAILABLE.
class EngineUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct EngineOptions {
  SchedulerConfig scheduler;
  int max_waiting_requests = 4096;  // beyond this, submit() refuses (overloaded)
  int vocab_size = 0;               // the model's; prompt ids must be below it
};

class Engine {
 public:
  // Keeps references to tokenizer, executor and metrics: they must outlive the engine.
  Engine(EngineOptions options, const Tokenizer& tokenizer, StepExecutor& executor, Metrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void start();
  // Graceful shutdown, first half: requests in flight carry on, new ones are refused (503) and
  // the server reports itself unhealthy so that load balancers move on.
  void begin_drain();
  // Ends every request with FINISH_REASON_ABORT(reason) and joins the loop thread.
  void stop(const std::string& reason);

  // Thread-safe. Throws std::invalid_argument (bad input: empty prompt, too long, id out of
  // vocabulary, duplicate request id) or EngineUnavailable.
  std::shared_ptr<RequestStream> submit(GenerateInput input);
  // Thread-safe, asynchronous: the request ends with FINISH_REASON_ABORT(reason) soon after.
  void abort(uint64_t seq_id, std::string reason);
  // By public request id; false when no such request is in flight.
  bool abort(const std::string& request_id, std::string reason);
  // The workers are gone (supervision saw it): fail every request, refuse new ones. Called again
  // with a fuller description, it only updates the health message.
  void mark_failed(std::string message);

  bool healthy() const;
  std::string health_message() const;
  GaugeSnapshot gauges() const;
  int num_active() const { return num_active_.load(); }
  const EngineOptions& options() const { return options_; }

 private:
  struct Active {
    std::shared_ptr<RequestStream> stream;
    std::unique_ptr<IncrementalDetokenizer> detokenizer;
    std::unique_ptr<StopStringMatcher> stops;
    bool logprobs = false;
    std::chrono::steady_clock::time_point arrival;
    std::optional<std::chrono::steady_clock::time_point> last_token;
  };
  struct Submitted {
    Sequence sequence;
    std::vector<std::string> stop_strings;
    bool skip_special_tokens = true;
    std::shared_ptr<RequestStream> stream;
    std::chrono::steady_clock::time_point arrival;
  };

  void loop();
  void admit(Submitted submitted);
  void run_step();
  void on_token(const TokenUpdate& update);
  void complete(uint64_t seq_id, FinishReason reason, std::string message);
  void fail_all(const std::string& message);
  void publish_gauges();
  std::string text_of(Active& active, int32_t token);

  EngineOptions options_;
  const Tokenizer& tokenizer_;
  StepExecutor& executor_;
  Metrics& metrics_;
  Scheduler scheduler_;  // loop thread only

  std::unordered_map<uint64_t, Active> active_;  // loop thread only
  bool busy_ = false;                            // loop thread only: a step may have work

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::vector<Submitted> incoming_;
  std::vector<std::pair<uint64_t, std::string>> aborts_;
  std::optional<std::string> failure_;  // set once, by mark_failed or a failed step
  std::unordered_map<std::string, uint64_t> request_ids_;  // in flight
  bool stopping_ = false;
  bool draining_ = false;
  bool healthy_ = true;
  std::string health_message_ = "ok";
  GaugeSnapshot gauges_;
  uint64_t next_seq_id_ = 1;

  std::atomic<int> num_active_{0};
  std::thread thread_;
};

}  // namespace ds::server
