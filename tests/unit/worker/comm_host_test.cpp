// HostCommunicator with real processes: one forked process per rank, talking over loopback TCP.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/common.h"
#include "worker/comm/host_communicator.h"

namespace ds::worker {
namespace {

using namespace std::chrono_literals;

struct RankOutcome {
  int exit_code = -1;
  std::string message;  // what the rank reported: empty when all its checks passed
};

// A rank's body returns "" when its checks pass, or a description of what went wrong.
using RankBody = std::function<std::string(int rank, HostCommListener& listener, const std::vector<std::string>& addresses)>;

// Forks `world` processes, one per rank, each with its own listener (opened before the fork,
// like a worker opens it before Hello). Kills everything still running after `limit`.
std::vector<RankOutcome> run_ranks(int world, const RankBody& body, std::chrono::seconds limit = 60s) {
  std::vector<HostCommListener> listeners;
  std::vector<std::string> addresses;
  for (int r = 0; r < world; ++r) {
    listeners.push_back(HostCommListener::open("127.0.0.1"));
    addresses.push_back(listeners.back().address());
  }
  std::vector<pid_t> pids(world);
  std::vector<int> pipes(world);
  for (int r = 0; r < world; ++r) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
      ::close(fds[0]);
      std::string message;
      int code = 0;
      try {
        message = body(r, listeners[r], addresses);
        code = message.empty() ? 0 : 1;
      } catch (const std::exception& e) {
        message = std::string("exception: ") + e.what();
        code = 2;
      }
      if (::write(fds[1], message.data(), message.size()) < 0) code = 3;
      ::_exit(code);
    }
    ::close(fds[1]);
    pids[r] = pid;
    pipes[r] = fds[0];
  }
  listeners.clear();  // the parent keeps no socket of the ranks open
  std::vector<RankOutcome> outcomes(world);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (int r = 0; r < world; ++r) {
    int status = 0;
    while (waitpid(pids[r], &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (pid_t p : pids) kill(p, SIGKILL);
        waitpid(pids[r], &status, 0);
        outcomes[r].message = "killed: still running after the test's time limit";
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    if (outcomes[r].message.empty()) {
      outcomes[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      char buffer[4096];
      ssize_t n;
      while ((n = ::read(pipes[r], buffer, sizeof(buffer))) > 0) outcomes[r].message.append(buffer, n);
    }
    ::close(pipes[r]);
  }
  return outcomes;
}

void expect_all_passed(const std::vector<RankOutcome>& outcomes) {
  for (size_t r = 0; r < outcomes.size(); ++r) {
    EXPECT_EQ(outcomes[r].exit_code, 0) << "rank " << r << ": " << outcomes[r].message;
  }
}

// Each rank's contribution: fresh random values (never zeros), reproducible from the rank.
std::vector<float> contribution(int rank, size_t count) {
  std::mt19937 rng(1234 + 7 * rank);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> v(count);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<kernels::bf16> to_bf16(const std::vector<float>& v) {
  std::vector<kernels::bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::float_to_bf16(v[i]);
  return out;
}

// The contract: the sum in rank order, accumulated in fp32, bf16 rounded once at the end.
std::vector<float> rank_order_sum(int world, size_t count, bool through_bf16) {
  std::vector<float> sum(count, 0.f);
  for (int r = 0; r < world; ++r) {
    auto v = contribution(r, count);
    for (size_t i = 0; i < count; ++i) {
      float x = through_bf16 ? kernels::bf16_to_float(kernels::float_to_bf16(v[i])) : v[i];
      sum[i] = r == 0 ? x : sum[i] + x;
    }
  }
  return sum;
}

std::string first_mismatch(const void* got, const void* want, size_t bytes, size_t element_bytes) {
  for (size_t i = 0; i < bytes; i += element_bytes) {
    if (std::memcmp(static_cast<const char*>(got) + i, static_cast<const char*>(want) + i, element_bytes) != 0) {
      return "first mismatch at element " + std::to_string(i / element_bytes);
    }
  }
  return "";
}

HostCommOptions quick_options() {
  HostCommOptions options;
  options.connect_timeout = 20s;
  options.collective_timeout = 20s;
  return options;
}

class HostCommWorld : public testing::TestWithParam<int> {};

TEST_P(HostCommWorld, AllReduceFp32IsTheRankOrderSumOnEveryRank) {
  const int world = GetParam();
  expect_all_passed(run_ranks(world, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    if (comm->rank() != rank || comm->world_size() != world) return std::string("wrong rank or world size");
    // Host collectives run on the CPU, so a decode step cannot be captured as a CUDA graph.
    if (comm->graph_capturable()) return std::string("claims CUDA-graph capture");
    for (size_t count : {size_t(1), size_t(1000), size_t(1) << 20}) {
      auto data = contribution(rank, count);
      comm->all_reduce_sum(data.data(), count, CommDType::kFloat32, nullptr);
      auto want = rank_order_sum(world, count, false);
      auto problem = first_mismatch(data.data(), want.data(), count * 4, 4);
      if (!problem.empty()) return "count " + std::to_string(count) + ": " + problem;
    }
    return std::string();
  }));
}

TEST_P(HostCommWorld, AllReduceBf16AccumulatesInFp32AndRoundsOnce) {
  const int world = GetParam();
  expect_all_passed(run_ranks(world, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    const size_t count = 4097;
    auto data = to_bf16(contribution(rank, count));
    comm->all_reduce_sum(data.data(), count, CommDType::kBFloat16, nullptr);
    auto want = to_bf16(rank_order_sum(world, count, true));
    return first_mismatch(data.data(), want.data(), count * 2, 2);
  }));
}

TEST_P(HostCommWorld, AllGatherPlacesRankRAtOffsetRTimesCount) {
  const int world = GetParam();
  expect_all_passed(run_ranks(world, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    const size_t count = 333;
    auto mine = contribution(rank, count);
    std::vector<float> out(world * count, -1.f);
    comm->all_gather(mine.data(), out.data(), count, CommDType::kFloat32, nullptr);
    for (int r = 0; r < world; ++r) {
      auto want = contribution(r, count);
      auto problem = first_mismatch(out.data() + r * count, want.data(), count * 4, 4);
      if (!problem.empty()) return "fp32 block of rank " + std::to_string(r) + ": " + problem;
    }
    auto mine16 = to_bf16(mine);
    std::vector<kernels::bf16> out16(world * count);
    comm->all_gather(mine16.data(), out16.data(), count, CommDType::kBFloat16, nullptr);
    for (int r = 0; r < world; ++r) {
      auto want = to_bf16(contribution(r, count));
      auto problem = first_mismatch(out16.data() + r * count, want.data(), count * 2, 2);
      if (!problem.empty()) return "bf16 block of rank " + std::to_string(r) + ": " + problem;
    }
    return std::string();
  }));
}

TEST_P(HostCommWorld, ManySmallCollectivesStayInStep) {
  const int world = GetParam();
  expect_all_passed(run_ranks(world, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    for (int i = 0; i < 500; ++i) {
      float x = float(rank + i);
      comm->all_reduce_sum(&x, 1, CommDType::kFloat32, nullptr);
      const float want = float(world * i + world * (world - 1) / 2);
      if (x != want) return "collective " + std::to_string(i) + ": got " + std::to_string(x);
    }
    return std::string();
  }));
}

INSTANTIATE_TEST_SUITE_P(Worlds, HostCommWorld, testing::Values(2, 3, 4),
                         [](const auto& info) { return "world" + std::to_string(info.param); });

TEST(HostComm, APeerThatDiesGivesAnErrorNamingIt) {
  const auto start = std::chrono::steady_clock::now();
  auto outcomes = run_ranks(3, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    if (rank == 2) ::_exit(0);  // dies without a word, mid-job
    float x = 1.f;
    try {
      comm->all_reduce_sum(&x, 1, CommDType::kFloat32, nullptr);
    } catch (const std::exception& e) {
      // A second call must refuse at once rather than talk to a broken group.
      try {
        comm->all_reduce_sum(&x, 1, CommDType::kFloat32, nullptr);
        return std::string("second call after the error succeeded");
      } catch (const std::exception& again) {
        return std::string("threw: ") + e.what() + " | then: " + again.what();
      }
    }
    return std::string("no error although rank 2 died");
  });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, 10s) << "a dead peer must be noticed from the closed socket, not the 20 s timeout";
  EXPECT_EQ(outcomes[2].exit_code, 0);
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(outcomes[r].message.find("threw: "), std::string::npos) << "rank " << r << ": " << outcomes[r].message;
    EXPECT_NE(outcomes[r].message.find("from rank 2"), std::string::npos) << outcomes[r].message;
    EXPECT_NE(outcomes[r].message.find("closed the connection"), std::string::npos) << outcomes[r].message;
    EXPECT_NE(outcomes[r].message.find("unusable after an earlier error"), std::string::npos) << outcomes[r].message;
  }
  EXPECT_NE(outcomes[1].message.find("rank 0 reports"), std::string::npos) << outcomes[1].message;
}

TEST(HostComm, AHungPeerTripsTheTimeout) {
  auto outcomes = run_ranks(2, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto options = quick_options();
    options.collective_timeout = 300ms;
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, options);
    if (rank == 1) {
      std::this_thread::sleep_for(3s);  // alive but never joins the collective
      return std::string();
    }
    float x = 1.f;
    try {
      comm->all_reduce_sum(&x, 1, CommDType::kFloat32, nullptr);
    } catch (const std::exception& e) {
      return std::string("threw: ") + e.what();
    }
    return std::string("no error although rank 1 never joined");
  });
  EXPECT_NE(outcomes[0].message.find("timed out"), std::string::npos) << outcomes[0].message;
  EXPECT_NE(outcomes[0].message.find("from rank 1"), std::string::npos) << outcomes[0].message;
}

TEST(HostComm, RanksOutOfStepAreReportedNotMixedUp) {
  auto outcomes = run_ranks(2, [&](int rank, HostCommListener& listener, const auto& addresses) {
    auto comm = HostCommunicator::connect(std::move(listener), rank, addresses, quick_options());
    std::vector<float> buffer(16, 1.f), gathered(32);
    try {
      if (rank == 0) {
        comm->all_reduce_sum(buffer.data(), 16, CommDType::kFloat32, nullptr);
      } else {
        comm->all_gather(buffer.data(), gathered.data(), 16, CommDType::kFloat32, nullptr);
      }
    } catch (const std::exception& e) {
      return std::string("threw: ") + e.what();
    }
    return std::string("no error");
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(outcomes[r].message.find("out of step"), std::string::npos) << "rank " << r << ": " << outcomes[r].message;
  }
}

TEST(HostComm, ConnectingToAMissingHubTimesOut) {
  auto gone = HostCommListener::open("127.0.0.1");
  const std::string hub_address = gone.address();
  { auto closed = std::move(gone); }  // nobody listens there any more
  HostCommOptions options;
  options.connect_timeout = 300ms;
  try {
    HostCommunicator::connect(HostCommListener::open("127.0.0.1"), 1, {hub_address, "127.0.0.1:1"}, options);
    FAIL() << "connect succeeded without a hub";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(hub_address), std::string::npos) << e.what();
  }
}

// World size 1 captures only with device memory (its all-gather is then a device copy).
TEST(SingleRankComm, CapturableOnlyOnTheDevice) {
  EXPECT_FALSE(make_single_rank_communicator(false)->graph_capturable());
  EXPECT_TRUE(make_single_rank_communicator(true)->graph_capturable());
}

TEST(HostComm, RankOutsideTheAddressListIsRefused) {
  EXPECT_THROW(HostCommunicator::connect(HostCommListener::open("127.0.0.1"), 2, {"127.0.0.1:1", "127.0.0.1:2"}),
               std::invalid_argument);
}

TEST(HostComm, WorldOfOneIsTheIdentity) {
  auto listener = HostCommListener::open("127.0.0.1");
  const std::string address = listener.address();
  auto comm = HostCommunicator::connect(std::move(listener), 0, {address});
  std::vector<float> x{1.5f, -2.f};
  comm->all_reduce_sum(x.data(), 2, CommDType::kFloat32, nullptr);
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.f}));
  std::vector<float> out(2);
  comm->all_gather(x.data(), out.data(), 2, CommDType::kFloat32, nullptr);
  EXPECT_EQ(out, x);
}

TEST(Tcp, ParsesHostPortForms) {
  EXPECT_EQ(tcp::parse_host_port("127.0.0.1:8080").port, 8080);
  EXPECT_EQ(tcp::parse_host_port("[::1]:9").host, "::1");
  EXPECT_EQ(tcp::format_host_port(tcp::parse_host_port("[::1]:9")), "[::1]:9");
  EXPECT_THROW(tcp::parse_host_port("localhost"), std::invalid_argument);
  EXPECT_THROW(tcp::parse_host_port("localhost:http"), std::invalid_argument);
  EXPECT_THROW(tcp::parse_host_port("localhost:70000"), std::invalid_argument);
  EXPECT_EQ(tcp::local_address_towards("127.0.0.1"), "127.0.0.1");
}

}  // namespace
}  // namespace ds::worker
