// Scheduler tests against a toy executor that checks every plan the way a worker relies on it
// (slot reset and continuity, page tables covering every position, no page or slot shared by two
// live sequences, sampling sent exactly once per admission) and whose next token depends on the
// whole context as read back through the page table, so a wrong recompute changes the output.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#include "server/scheduler/scheduler.h"

namespace ds::server {
namespace {

constexpr int kVocab = 1000;
constexpr int32_t kEos = 7;

class ToyExecutor {
 public:
  ToyExecutor(int num_pages, int page_size, int num_slots)
      : page_size_(page_size), kv_(num_pages, std::vector<int32_t>(page_size, -1)), slots_(num_slots) {}

  control::StepResult execute(const control::StepPlan& plan) {
    EXPECT_EQ(plan.step_id(), last_step_ + 1);
    last_step_ = plan.step_id();
    for (uint64_t id : plan.released_seq_ids()) {
      EXPECT_TRUE(seqs_.contains(id)) << "release of unknown sequence " << id;
      for (uint32_t page : seqs_[id].pages) page_owner_.erase(page);
      seqs_.erase(id);
    }
    control::StepResult result;
    result.set_step_id(plan.step_id());
    std::set<uint64_t> in_plan;
    std::set<uint32_t> slots_in_plan;
    for (const auto& chunk : plan.sequences()) {
      uint64_t id = chunk.seq_id();
      EXPECT_TRUE(in_plan.insert(id).second) << "sequence twice in one plan";
      EXPECT_NE(chunk.gdn_slot(), 0u) << "scratch slot handed out";
      EXPECT_TRUE(slots_in_plan.insert(chunk.gdn_slot()).second) << "slot shared in one plan";
      for (uint64_t released : plan.released_seq_ids()) EXPECT_NE(released, id) << "released and scheduled";
      bool known = seqs_.contains(id);
      EXPECT_EQ(chunk.has_sampling(), !known) << "sampling must come exactly with the first chunk";
      auto& seq = seqs_[id];
      for (uint32_t page : chunk.new_kv_pages()) {
        auto [it, fresh] = page_owner_.emplace(page, id);
        EXPECT_TRUE(fresh || it->second == id) << "page " << page << " shared by " << it->second << " and " << id;
        seq.pages.push_back(page);
      }
      auto& slot = slots_[chunk.gdn_slot()];
      if (chunk.reset_slot()) slot = SlotState{id, 0, 17};
      EXPECT_EQ(slot.owner, id) << "slot used without reset by another sequence";
      EXPECT_EQ(slot.num_tokens, chunk.start_pos()) << "recurrent state does not continue at start_pos";
      for (int i = 0; i < chunk.token_ids_size(); ++i) {
        uint32_t pos = chunk.start_pos() + i;
        EXPECT_LT(pos / page_size_, seq.pages.size()) << "page table does not cover position " << pos;
        if (pos / page_size_ >= seq.pages.size()) return result;
        kv_[seq.pages[pos / page_size_]][pos % page_size_] = static_cast<int32_t>(chunk.token_ids(i));
        slot.hash = slot.hash * 31 + chunk.token_ids(i);
        ++slot.num_tokens;
      }
      if (chunk.sample()) {
        uint64_t h = slot.hash;
        for (uint32_t pos = 0; pos < slot.num_tokens; ++pos) h = h * 131 + kv_[seq.pages[pos / page_size_]][pos % page_size_];
        auto* t = result.add_tokens();
        t->set_seq_id(id);
        t->set_token_id(static_cast<uint32_t>((h >> 7) % kVocab));
        t->set_logprob(-0.5f);
      }
    }
    return result;
  }

 private:
  struct SeqState {
    std::vector<uint32_t> pages;
  };
  struct SlotState {
    uint64_t owner = ~0ull;
    uint32_t num_tokens = 0;
    uint64_t hash = 0;
  };
  uint32_t page_size_;
  uint64_t last_step_ = 0;
  std::vector<std::vector<int32_t>> kv_;
  std::vector<SlotState> slots_;
  std::unordered_map<uint64_t, SeqState> seqs_;
  std::unordered_map<uint32_t, uint64_t> page_owner_;
};

SchedulerConfig config(int pages, int slots, int running = 64, int batched = 256, int page_size = 4) {
  SchedulerConfig c;
  c.max_running_requests = running;
  c.max_num_batched_tokens = batched;
  c.kv_page_size = page_size;
  c.num_kv_pages = pages;
  c.num_gdn_slots = slots;
  c.max_context_len = std::min(pages * page_size, 512);
  return c;
}

Sequence make_seq(uint64_t id, int prompt_len, int max_tokens) {
  Sequence s;
  s.id = id;
  for (int i = 0; i < prompt_len; ++i) s.tokens.push_back(static_cast<int32_t>(100 + (id * 13 + i * 7) % 800));
  s.stop.max_tokens = max_tokens;
  s.stop.ignore_eos = true;
  return s;
}

struct RunLog {
  std::map<uint64_t, std::vector<int32_t>> outputs;
  std::map<uint64_t, FinishReason> finishes;
  int max_running = 0;
  int max_plan_tokens = 0;
  int steps = 0;
};

// Drives scheduler + executor until every sequence ended; `on_step` may intervene between steps.
RunLog run(Scheduler& scheduler, ToyExecutor& executor, const std::function<void(Scheduler&, int)>& on_step = {}) {
  RunLog log;
  while (auto plan = scheduler.schedule()) {
    int tokens = 0;
    for (const auto& c : plan->sequences()) tokens += c.token_ids_size();
    log.max_plan_tokens = std::max(log.max_plan_tokens, tokens);
    log.max_running = std::max(log.max_running, scheduler.num_running());
    for (const auto& u : scheduler.apply(executor.execute(*plan))) {
      log.outputs[u.seq_id].push_back(u.token_id);
      if (u.finish) log.finishes[u.seq_id] = *u.finish;
    }
    if (on_step) on_step(scheduler, log.steps);
    ++log.steps;
    if (log.steps > 100000) ADD_FAILURE() << "scheduler did not converge";
    if (log.steps > 100000) break;
  }
  return log;
}

void expect_all_free(const Scheduler& s) {
  EXPECT_EQ(s.free_kv_pages(), s.total_kv_pages());
  EXPECT_EQ(s.free_gdn_slots(), s.total_gdn_slots());
  EXPECT_EQ(s.num_running(), 0);
  EXPECT_EQ(s.num_waiting(), 0);
}

TEST(Scheduler, CompletesEveryRequestWithMaxTokensAndFreesAll) {
  Scheduler s(config(1000, 9));
  ToyExecutor ex(1000, 4, 9);
  for (uint64_t id = 1; id <= 20; ++id) s.add(make_seq(id, 3 + static_cast<int>(id) * 5, 4 + static_cast<int>(id)));
  auto log = run(s, ex);
  for (uint64_t id = 1; id <= 20; ++id) {
    EXPECT_EQ(log.outputs[id].size(), 4 + id);
    EXPECT_EQ(log.finishes[id], FinishReason::kLength);
  }
  EXPECT_LE(log.max_running, 8) << "more running than GDN slots";
  expect_all_free(s);
}

TEST(Scheduler, AdmissionRespectsMaxRunningRequests) {
  Scheduler s(config(1000, 65, /*running=*/3));
  ToyExecutor ex(1000, 4, 65);
  for (uint64_t id = 1; id <= 10; ++id) s.add(make_seq(id, 5, 6));
  auto log = run(s, ex);
  EXPECT_EQ(log.max_running, 3);
  EXPECT_EQ(log.outputs.size(), 10u);
  expect_all_free(s);
}

TEST(Scheduler, AdmissionNeedsPagesForTheWholePrompt) {
  // 10 pages of 4 tokens; each prompt needs 8 pages, so only one runs at a time.
  Scheduler s(config(10, 9));
  ToyExecutor ex(10, 4, 9);
  s.add(make_seq(1, 30, 2));
  s.add(make_seq(2, 30, 2));
  auto plan = s.schedule();
  ASSERT_TRUE(plan);
  EXPECT_EQ(s.num_running(), 1);
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_EQ(s.free_kv_pages(), 2);
  s.apply(ex.execute(*plan));
  auto log = run(s, ex);
  EXPECT_EQ(log.outputs[2].size(), 2u);
  expect_all_free(s);
}

TEST(Scheduler, ChunkedPrefillStaysWithinTheTokenBudget) {
  Scheduler s(config(1000, 9, 8, /*batched=*/16));
  ToyExecutor ex(1000, 4, 9);
  Scheduler reference(config(1000, 9, 8, 4096));
  ToyExecutor ex_ref(1000, 4, 9);
  for (uint64_t id = 1; id <= 5; ++id) {
    s.add(make_seq(id, 40, 10));
    reference.add(make_seq(id, 40, 10));
  }
  auto log = run(s, ex);
  auto ref = run(reference, ex_ref);
  EXPECT_EQ(log.max_plan_tokens, 16);
  EXPECT_GT(ref.max_plan_tokens, 16);
  EXPECT_EQ(log.outputs, ref.outputs) << "chunking changed the tokens";
  expect_all_free(s);
}

TEST(Scheduler, FirstPlanSplitsALongPromptIntoBudgetSizedChunks) {
  Scheduler s(config(1000, 9, 8, 16));
  s.add(make_seq(1, 40, 1));
  auto plan = s.schedule();
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->sequences_size(), 1);
  EXPECT_EQ(plan->sequences(0).token_ids_size(), 16);
  EXPECT_FALSE(plan->sequences(0).sample());
  EXPECT_TRUE(plan->sequences(0).reset_slot());
  EXPECT_EQ(plan->sequences(0).new_kv_pages_size(), 10);  // all 40 tokens' pages at admission
}

TEST(Scheduler, PreemptionAndResumeGiveTheUnconstrainedTokens) {
  Scheduler roomy(config(1000, 9));
  ToyExecutor ex_roomy(1000, 4, 9);
  // 24 pages * 4 = 96 tokens for 6 sequences that each grow to 10 + 20 = 30 tokens.
  SchedulerConfig tight_config = config(24, 9);
  tight_config.max_context_len = 64;
  Scheduler tight(tight_config);
  ToyExecutor ex_tight(24, 4, 9);
  for (uint64_t id = 1; id <= 6; ++id) {
    roomy.add(make_seq(id, 10, 20));
    tight.add(make_seq(id, 10, 20));
  }
  auto ref = run(roomy, ex_roomy);
  auto log = run(tight, ex_tight);
  EXPECT_GT(tight.num_preemptions(), 0u) << "the test needs preemption to happen";
  EXPECT_EQ(log.outputs, ref.outputs);
  expect_all_free(tight);
}

TEST(Scheduler, StopsOnEosUnlessIgnoredAndOnStopTokenIds) {
  // Find what the toy model generates, then stop on its 3rd token via EOS and via stop ids.
  auto first_tokens = [] {
    Scheduler s(config(100, 3));
    ToyExecutor ex(100, 4, 3);
    s.add(make_seq(1, 6, 5));
    return run(s, ex).outputs[1];
  }();
  ASSERT_EQ(first_tokens.size(), 5u);
  int32_t third = first_tokens[2];

  SchedulerConfig with_eos = config(100, 3);
  with_eos.eos_token_ids = {third};
  for (bool ignore : {false, true}) {
    Scheduler s(with_eos);
    ToyExecutor ex(100, 4, 3);
    auto seq = make_seq(1, 6, 5);
    seq.stop.ignore_eos = ignore;
    s.add(seq);
    auto log = run(s, ex);
    EXPECT_EQ(log.outputs[1].size(), ignore ? 5u : 3u);
    EXPECT_EQ(log.finishes[1], ignore ? FinishReason::kLength : FinishReason::kStop);
    expect_all_free(s);
  }
  Scheduler s(config(100, 3));
  ToyExecutor ex(100, 4, 3);
  auto seq = make_seq(1, 6, 5);
  seq.stop.stop_token_ids = {third};
  s.add(seq);
  auto log = run(s, ex);
  EXPECT_EQ(log.outputs[1].size(), 3u);
  EXPECT_EQ(log.finishes[1], FinishReason::kStop);
  expect_all_free(s);
}

TEST(Scheduler, StopsAtTheContextLimit) {
  SchedulerConfig c = config(100, 3);
  c.max_context_len = 12;
  Scheduler s(c);
  ToyExecutor ex(100, 4, 3);
  s.add(make_seq(1, 9, 100));
  auto log = run(s, ex);
  EXPECT_EQ(log.outputs[1].size(), 3u);
  EXPECT_EQ(log.finishes[1], FinishReason::kLength);
  EXPECT_THROW(s.add(make_seq(2, 12, 1)), std::invalid_argument);
  expect_all_free(s);
}

TEST(Scheduler, AbortFreesEverythingAtOnceWhetherRunningOrWaiting) {
  Scheduler s(config(40, 3, 64, 256));
  ToyExecutor ex(40, 4, 3);
  for (uint64_t id = 1; id <= 4; ++id) s.add(make_seq(id, 12, 50));
  // Abort one running sequence (the "aborted" outcome) and one waiting one (a client that
  // disconnected before admission), mid-run.
  auto log = run(s, ex, [](Scheduler& sched, int step) {
    if (step == 3) {
      EXPECT_EQ(sched.num_running(), 2);
      EXPECT_TRUE(sched.finish(1));
      EXPECT_TRUE(sched.finish(4));
      EXPECT_FALSE(sched.finish(4));
    }
  });
  EXPECT_FALSE(log.finishes.contains(1));
  EXPECT_EQ(log.outputs[2].size(), 50u);
  EXPECT_EQ(log.outputs[3].size(), 50u);
  EXPECT_FALSE(log.outputs.contains(4));
  expect_all_free(s);
}

TEST(Scheduler, FailingAllFreesEverything) {
  Scheduler s(config(100, 5));
  ToyExecutor ex(100, 4, 5);
  for (uint64_t id = 1; id <= 8; ++id) s.add(make_seq(id, 7, 30));
  for (int i = 0; i < 5; ++i) s.apply(ex.execute(*s.schedule()));
  EXPECT_GT(s.num_running(), 0);
  EXPECT_GT(s.num_waiting(), 0);
  EXPECT_EQ(s.finish_all().size(), 8u);
  expect_all_free(s);
}

TEST(Scheduler, RejectsRequestsThatCanNeverRun) {
  Scheduler s(config(100, 5));
  EXPECT_THROW(s.add(make_seq(1, 0, 5)), std::invalid_argument);
  EXPECT_THROW(s.add(make_seq(1, 5, 0)), std::invalid_argument);
  s.add(make_seq(1, 5, 5));
  EXPECT_THROW(s.add(make_seq(1, 5, 5)), std::invalid_argument);
  EXPECT_THROW(Scheduler(config(10, 5, 64, 32)), std::invalid_argument);  // running > batched tokens
}

TEST(Scheduler, ApplyRejectsAResultThatDoesNotMatchThePlan) {
  Scheduler s(config(100, 5));
  s.add(make_seq(1, 5, 5));
  auto plan = s.schedule();
  ASSERT_TRUE(plan);
  control::StepResult empty;
  EXPECT_THROW(s.apply(empty), std::runtime_error);
}

TEST(Scheduler, PlansCarrySamplingAndPagesOnlyOnce) {
  Scheduler s(config(100, 5));
  ToyExecutor ex(100, 4, 5);
  s.add(make_seq(1, 3, 10));
  int with_sampling = 0, pages = 0;
  while (auto plan = s.schedule()) {
    for (const auto& c : plan->sequences()) {
      with_sampling += c.has_sampling();
      pages += c.new_kv_pages_size();
      EXPECT_EQ(c.sample_index(), s.find(1)->num_generated());
    }
    s.apply(ex.execute(*plan));
  }
  EXPECT_EQ(with_sampling, 1);
  EXPECT_EQ(pages, 3);  // 3 + 10 tokens; the last is never fed: positions 0..11 fill 3 pages of 4
}

}  // namespace
}  // namespace ds::server
