// The engine's request lifecycle over a scripted executor: text, stop strings, EOS, aborts,
// worker failure, and that every outcome gives back its KV pages and GDN slot.
#include "server/engine/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

namespace ds::server {
namespace {

// Emits script[sample_index] for every sampling sequence; can be told to fail or to go slowly.
class ScriptedExecutor : public StepExecutor {
 public:
  explicit ScriptedExecutor(std::vector<int32_t> script) : script_(std::move(script)) {}
  control::StepResult execute(const control::StepPlan& plan) override {
    {
      std::unique_lock lock(mutex_);
      released_.wait(lock, [&] { return !held_; });
    }
    if (fail_) throw std::runtime_error("worker rank 1 (pid 42) killed by signal 9 (Killed)");
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    control::StepResult result;
    result.set_step_id(plan.step_id());
    for (const auto& chunk : plan.sequences()) {
      if (!chunk.sample()) continue;
      auto* t = result.add_tokens();
      t->set_seq_id(chunk.seq_id());
      t->set_token_id(static_cast<uint32_t>(script_[chunk.sample_index() % script_.size()]));
      t->set_logprob(-1.5f);
    }
    return result;
  }
  // While held, steps wait (the test queues requests meanwhile).
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      held_ = false;
    }
    released_.notify_all();
  }
  std::atomic<bool> fail_{false};  // every step from now on fails
  std::chrono::milliseconds delay_{0};

 private:
  std::vector<int32_t> script_;
  std::mutex mutex_;
  std::condition_variable released_;
  bool held_ = false;
};

struct Collected {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  OutputDelta last;
};

Collected collect(RequestStream& stream) {
  std::mutex mutex;
  std::condition_variable cv;
  bool ready = false;
  stream.set_notify([&] {
    std::lock_guard lock(mutex);
    ready = true;
    cv.notify_one();
  });
  Collected out;
  for (;;) {
    {
      std::unique_lock lock(mutex);
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return ready; });
      ready = false;
    }
    OutputDelta d = stream.take();
    out.text += d.text;
    out.ids.insert(out.ids.end(), d.token_ids.begin(), d.token_ids.end());
    out.logprobs.insert(out.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
    if (d.finish) {
      out.last = d;
      stream.set_notify({});
      return out;
    }
  }
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::path dir = std::filesystem::path(DELTASERVE_SOURCE_DIR) / "data" / "tokenizer" / "qwen3";
    if (!std::filesystem::exists(dir / "tokenizer.json"))
      GTEST_SKIP() << "no tokenizer at " << dir << " (run deploy/setup.sh)";
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir.string()));
  }

  void start(std::vector<int32_t> script, std::vector<int32_t> eos = {}) {
    executor_ = std::make_unique<ScriptedExecutor>(std::move(script));
    EngineOptions o;
    o.scheduler.max_running_requests = 8;
    o.scheduler.max_num_batched_tokens = 64;
    o.scheduler.kv_page_size = 4;
    o.scheduler.num_kv_pages = 64;
    o.scheduler.num_gdn_slots = 9;
    o.scheduler.max_context_len = 200;
    o.scheduler.eos_token_ids = std::move(eos);
    o.vocab_size = tokenizer_->vocab_size();
    engine_ = std::make_unique<Engine>(o, *tokenizer_, *executor_, metrics_);
    engine_->start();
  }

  GenerateInput input(const std::string& prompt, int max_tokens) {
    GenerateInput in;
    in.prompt = tokenizer_->encode(prompt);
    in.stop.max_tokens = max_tokens;
    in.sampling.logprobs = true;
    return in;
  }

  void expect_everything_free() {
    // Gauges are published after each loop iteration; give the loop a moment to go idle.
    for (int i = 0; i < 100 && engine_->gauges().kv_pages_used + engine_->gauges().gdn_slots_used > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    GaugeSnapshot g = engine_->gauges();
    EXPECT_EQ(g.kv_pages_used, 0);
    EXPECT_EQ(g.gdn_slots_used, 0);
    EXPECT_EQ(g.running_requests, 0);
    EXPECT_EQ(g.waiting_requests, 0);
    EXPECT_EQ(engine_->num_active(), 0);
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ScriptedExecutor> executor_;
  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, StreamsTheDetokenizedTextAndUsage) {
  auto script = tokenizer_->encode("Hello, wörld! 你好 🎉 done");
  start(script);
  auto out = collect(*engine_->submit(input("Say hi", static_cast<int>(script.size()))));
  EXPECT_EQ(out.text, "Hello, wörld! 你好 🎉 done");
  EXPECT_EQ(out.ids, script);
  EXPECT_EQ(out.logprobs.size(), script.size());
  EXPECT_EQ(*out.last.finish, FinishReason::kLength);
  EXPECT_EQ(out.last.completion_tokens, static_cast<int>(script.size()));
  EXPECT_EQ(out.last.prompt_tokens, static_cast<int>(tokenizer_->encode("Say hi").size()));
  expect_everything_free();
  EXPECT_EQ(metrics_.requests(Outcome::kLength), 1u);
}

TEST_F(EngineTest, StopStringCutsTheTextAndEndsTheRequest) {
  auto script = tokenizer_->encode("alpha beta STOP gamma delta");
  start(script);
  GenerateInput in = input("x", 50);
  in.stop_strings = {"STOP"};
  auto out = collect(*engine_->submit(in));
  EXPECT_EQ(out.text, "alpha beta ");
  EXPECT_EQ(*out.last.finish, FinishReason::kStop);
  EXPECT_EQ(out.last.finish_message, "STOP");
  expect_everything_free();
}

TEST_F(EngineTest, EosEndsTheRequestWithoutItsText) {
  auto im_end = *tokenizer_->token_id("<|im_end|>");
  auto script = tokenizer_->encode("short answer");
  script.push_back(im_end);
  script.push_back(tokenizer_->encode(" never")[0]);
  start(script, {im_end});
  auto out = collect(*engine_->submit(input("q", 50)));
  EXPECT_EQ(out.text, "short answer");
  EXPECT_EQ(out.ids.back(), im_end);
  EXPECT_EQ(*out.last.finish, FinishReason::kStop);
  GenerateInput ignoring = input("q", 6);
  ignoring.stop.ignore_eos = true;
  ignoring.skip_special_tokens = false;
  auto all = collect(*engine_->submit(ignoring));
  EXPECT_EQ(all.ids.size(), 6u);
  EXPECT_NE(all.text.find("<|im_end|>"), std::string::npos);
  expect_everything_free();
}

TEST_F(EngineTest, AbortAndDisconnectFreeTheirSlotAndPages) {
  start(tokenizer_->encode(" a b c d e f g h"));
  executor_->delay_ = std::chrono::milliseconds(5);
  auto a = engine_->submit(input("first request", 150));
  GenerateInput named = input("second request", 150);
  named.request_id = "client-7";
  auto b = engine_->submit(named);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  engine_->abort(a->seq_id(), "client disconnected");
  EXPECT_TRUE(engine_->abort("client-7", "aborted by the client"));
  EXPECT_FALSE(engine_->abort("no-such-request", "x"));
  auto out_a = collect(*a);
  auto out_b = collect(*b);
  EXPECT_EQ(*out_a.last.finish, FinishReason::kAbort);
  EXPECT_EQ(out_a.last.finish_message, "client disconnected");
  EXPECT_EQ(*out_b.last.finish, FinishReason::kAbort);
  expect_everything_free();
  EXPECT_EQ(metrics_.requests(Outcome::kAbort), 2u);
}

TEST_F(EngineTest, AWorkerFailureFailsEveryRequestAndMakesTheEngineUnhealthy) {
  start(tokenizer_->encode(" x y z"));
  // The failure comes once all 12 are submitted and before any step ends: under load, a failure at
  // a fixed step made later submissions throw, and later ones let some finish.
  executor_->hold();
  struct Release {
    ScriptedExecutor& executor;
    ~Release() { executor.release(); }  // also if a submit throws: the engine joins its loop
  } release{*executor_};
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 12; ++i) streams.push_back(engine_->submit(input("request " + std::to_string(i), 100)));
  executor_->fail_ = true;
  executor_->release();
  for (auto& s : streams) {
    auto out = collect(*s);
    EXPECT_EQ(*out.last.finish, FinishReason::kError);
    EXPECT_NE(out.last.finish_message.find("killed by signal 9"), std::string::npos);
  }
  EXPECT_FALSE(engine_->healthy());
  EXPECT_NE(engine_->health_message().find("worker rank 1"), std::string::npos);
  EXPECT_THROW(engine_->submit(input("late", 5)), EngineUnavailable);
  // Supervision may learn the root cause after the step failed: the health message grows.
  std::string fuller = engine_->health_message() + "; worker rank 0: the peer closed the connection";
  engine_->mark_failed(fuller);
  EXPECT_EQ(engine_->health_message(), fuller);
  engine_->mark_failed("something unrelated");
  EXPECT_EQ(engine_->health_message(), fuller);
  expect_everything_free();
}

TEST_F(EngineTest, DrainingFinishesRunningRequestsAndRefusesNewOnes) {
  auto script = tokenizer_->encode(" one two three");
  start(script);
  executor_->delay_ = std::chrono::milliseconds(5);
  auto running = engine_->submit(input("already here", 20));
  engine_->begin_drain();
  EXPECT_THROW(engine_->submit(input("too late", 5)), EngineUnavailable);
  EXPECT_FALSE(engine_->healthy());
  EXPECT_EQ(engine_->health_message(), "shutting down");
  auto out = collect(*running);
  EXPECT_EQ(*out.last.finish, FinishReason::kLength);
  EXPECT_EQ(out.ids.size(), 20u);
  expect_everything_free();
}

TEST_F(EngineTest, ManyConcurrentRequestsAllComplete) {
  auto script = tokenizer_->encode(" one two three four five six");
  start(script);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 100; ++i) streams.push_back(engine_->submit(input("prompt number " + std::to_string(i), 6)));
  for (auto& s : streams) EXPECT_EQ(collect(*s).text, " one two three four five six");
  expect_everything_free();
}

TEST_F(EngineTest, RefusesBadInput) {
  start({1});
  EXPECT_THROW(engine_->submit(input("", 5)), std::invalid_argument);
  GenerateInput out_of_vocab = input("x", 5);
  out_of_vocab.prompt.push_back(tokenizer_->vocab_size());
  EXPECT_THROW(engine_->submit(out_of_vocab), std::invalid_argument);
  GenerateInput too_long = input("x", 5);
  too_long.prompt.assign(200, 100);
  EXPECT_THROW(engine_->submit(too_long), std::invalid_argument);
  GenerateInput empty_stop = input("x", 5);
  empty_stop.stop_strings = {""};
  EXPECT_THROW(engine_->submit(empty_stop), std::invalid_argument);
}

}  // namespace
}  // namespace ds::server
