// Tensor parallelism on the CPU backend: each rank a forked process with a HostCommunicator,
// running the fixture models split over 2 and 4 ranks (4 replicates the 2 KV heads). Every rank
// must produce transformers' greedy tokens and logits, which checks the all-reduces after
// out_proj / o_proj / down_proj / the MoE block, the vocab-parallel embedding and the all-gathered
// lm_head.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tests/unit/worker/model_fixture_util.h"
#include "worker/comm/host_communicator.h"
#include "worker/model_runner.h"

namespace ds::worker::testing {
namespace {

using namespace std::chrono_literals;

constexpr double kTolerance = 1e-3;

// What rank `rank` checks; gtest assertions inside mark the child's test as failed, which the
// exit code reports to the parent.
void rank_body(const std::string& fixture, int rank, HostCommListener listener, const std::vector<std::string>& addresses) {
  auto comm = HostCommunicator::connect(std::move(listener), rank, addresses);
  RunnerOptions options;
  options.model_dir = fixture_dir(fixture);
  options.device = "cpu";
  options.kv_page_size = kPageSize;
  options.max_num_batched_tokens = 256;
  options.comm = comm.get();
  auto runner = ModelRunner::create(options);
  runner->allocate_pools(kNumKvPages, kMaxSeqs + 1);
  const std::vector<Prompt> prompts = read_prompts(fixture);
  std::vector<Driver> drivers;
  const int chunks[kNumPrompts] = {1 << 20, 3, 7};
  for (int p = 0; p < kNumPrompts; ++p) drivers.push_back(make_driver(p, prompts[p].input_ids, chunks[p], 12));
  run_drivers(*runner, drivers, {0, 1, 0});
  for (int p = 0; p < kNumPrompts; ++p) {
    expect_matches_reference(drivers[p], prompts[p], 12, kTolerance,
                             "rank " + std::to_string(rank) + " prompt " + std::to_string(p));
  }
}

// Forks one process per rank; returns each rank's exit status (0: all its checks passed).
std::vector<int> run_ranks(const std::string& fixture, int world) {
  std::vector<HostCommListener> listeners;
  std::vector<std::string> addresses;
  for (int r = 0; r < world; ++r) {
    listeners.push_back(HostCommListener::open("127.0.0.1"));
    addresses.push_back(listeners.back().address());
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      int code = 0;
      try {
        rank_body(fixture, r, std::move(listeners[r]), addresses);
        code = ::testing::Test::HasFailure() ? 1 : 0;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        code = 2;
      }
      std::fflush(nullptr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  listeners.clear();
  std::vector<int> codes;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  for (pid_t pid : pids) {
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (pid_t p : pids) kill(p, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

class ModelTensorParallelTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ModelTensorParallelTest, EveryRankMatchesTransformers) {
  const auto& [fixture, world] = GetParam();
  const std::vector<int> codes = run_ranks(fixture, world);
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r << " of " << world << " (see its output above)";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelTensorParallelTest,
                         ::testing::Combine(::testing::Values("qwen3_5_dense", "qwen3_5_moe", "qwen3_next"),
                                            ::testing::Values(2, 4)));

}  // namespace
}  // namespace ds::worker::testing
