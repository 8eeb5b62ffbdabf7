// The worker process against a small in-test front end: a real gRPC WorkerControl server here,
// real `deltaserve worker --device cpu` processes (the tiny preset with dummy weights), real
// sockets between the ranks. Needs bin/deltaserve built (ninja deltaserve).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "kernels/device.h"
#include "tests/unit/worker/model_fixture_util.h"
#include "weights/safetensors.h"
#include "proto/worker.grpc.pb.h"

extern char** environ;

namespace {

namespace pb = deltaserve::worker::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kBinary = DELTASERVE_BINARY_DIR "/bin/deltaserve";
constexpr uint32_t kPageSize = 16;

// One worker's control stream, driven by the test thread while the gRPC handler thread waits.
struct WorkerLink {
  grpc::ServerContext* context = nullptr;
  grpc::ServerReaderWriter<pb::ControlMessage, pb::WorkerMessage>* stream = nullptr;
  pb::Hello hello;
  bool finished = false;  // the test is done with this stream: the call may end

  void send(const pb::ControlMessage& message) { ASSERT_TRUE(stream->Write(message)) << "rank " << hello.rank(); }
  // The next message, or nullopt when the worker ended the stream.
  std::optional<pb::WorkerMessage> receive() {
    pb::WorkerMessage message;
    if (!stream->Read(&message)) return std::nullopt;
    return message;
  }
};

// The front end's side of WorkerControl: collects the streams of connecting workers and holds
// each call open until the test is done with it (or the call is cancelled).
class ControlService final : public pb::WorkerControl::Service {
 public:
  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<pb::ControlMessage, pb::WorkerMessage>* stream) override {
    pb::WorkerMessage first;
    if (!stream->Read(&first) || !first.has_hello()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "the first message must be Hello");
    }
    auto link = std::make_shared<WorkerLink>();
    link->context = context;
    link->stream = stream;
    link->hello = first.hello();
    std::unique_lock lock(mutex_);
    links_.push_back(link);
    changed_.notify_all();
    while (!released_ && !link->finished && !context->IsCancelled()) changed_.wait_for(lock, 50ms);
    return grpc::Status::OK;
  }

  // The first `world` links, ordered by rank; fails the test after `limit`.
  std::vector<std::shared_ptr<WorkerLink>> wait_for_workers(size_t world, std::chrono::seconds limit = 60s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, limit, [&] { return links_.size() >= world; });
    std::vector<std::shared_ptr<WorkerLink>> links = links_;
    std::sort(links.begin(), links.end(), [](auto& a, auto& b) { return a->hello.rank() < b->hello.rank(); });
    return links;
  }

  // Ends the call once the worker has half-closed its side, as a front end does after Shutdown.
  void finish(WorkerLink& link) {
    while (link.receive()) {
    }
    std::lock_guard lock(mutex_);
    link.finished = true;
    changed_.notify_all();
  }

  void release_all() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::shared_ptr<WorkerLink>> links_;
  bool released_ = false;
};

// A front end on an ephemeral loopback port.
struct FrontEnd {
  ControlService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;

  FrontEnd() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FrontEnd() { stop(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  void stop() {
    if (!server) return;
    service.release_all();
    server->Shutdown(std::chrono::system_clock::now() + 1s);
    server.reset();
  }
};

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

// "cpu" for every rank, or "cuda" for rank r on cuda:r.
std::string device_of(const std::string& kind, int rank) { return kind == "cpu" ? kind : "cuda:" + std::to_string(rank); }

pid_t spawn_worker(const std::string& connect, int rank, const std::string& kind) {
  return spawn({kBinary, "worker", "--connect", connect, "--rank", std::to_string(rank), "--device",
                device_of(kind, rank), "--exit-with-parent", "--connect-timeout", "30"});
}

// Exit code (or 128 + signal), or -1 if the process is still running after `limit`.
int wait_exit(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void kill_and_reap(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (p > 0 && kill(p, SIGKILL) == 0) waitpid(p, nullptr, 0);
  }
}

void set_greedy(pb::SamplingConfig* sampling) {
  sampling->set_temperature(0.f);
  sampling->set_top_p(1.f);  // proto3 has no "unset": the front end sends every field
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// What the workers load: a preset with dummy weights, or a checkpoint folder.
struct Model {
  std::string preset;
  std::string dir;
  std::string model_type;
};
const Model kTinyDummy{"tiny", "", "qwen3_5_text"};
// The [model] fixtures: tiny random checkpoints of the three kinds, made with transformers.
const std::vector<Model> kFixtures = {
    {"", DELTASERVE_SOURCE_DIR "/tests/data/qwen3_5_dense", "qwen3_5_text"},
    {"", DELTASERVE_SOURCE_DIR "/tests/data/qwen3_5_moe", "qwen3_5_moe_text"},
    {"", DELTASERVE_SOURCE_DIR "/tests/data/qwen3_next", "qwen3_next"},
};

// Two sequences' prompts by sequence id.
using Prompts = std::map<uint64_t, std::vector<uint32_t>>;
// Ids below 512, the fixtures' vocabulary.
const Prompts kDefaultPrompts = {{11, {97, 11, 187, 0, 374, 264, 127}}, {12, {78, 397, 138, 383, 18, 22, 100, 424, 5}}};

// A fixture's first two recorded prompts. make_fixtures.py keeps only fixtures whose greedy paths
// from these prompts BF16 can follow (no near tie between the top two logits), so GPU ranks that
// sum partial results in a different order still pick the same tokens; arbitrary prompts may hit
// a near tie that any reordering of BF16 sums flips.
Prompts fixture_prompts(const Model& model) {
  if (model.dir.empty()) return kDefaultPrompts;
  const ds::weights::SafetensorsFile file(model.dir + "/reference.safetensors");
  Prompts prompts;
  for (int p = 0; p < 2; ++p) {
    const auto ids = ds::worker::testing::read_tensor<int32_t>(file, "prompt" + std::to_string(p) + ".input_ids");
    prompts[11 + p] = std::vector<uint32_t>(ids.begin(), ids.end());
  }
  return prompts;
}

struct Generation {
  std::map<uint64_t, std::vector<uint32_t>> tokens;  // per sequence, in order
  std::vector<double> round_trip_ms, step_ms, forward_ms;
};

// A tensor-parallel group of CPU workers attached to an in-test front end.
class Group {
 public:
  explicit Group(int world, std::string kind = "cpu") : world_(world), kind_(std::move(kind)) {
    if (access(kBinary.c_str(), X_OK) != 0) throw std::runtime_error(kBinary + " is missing: build the deltaserve target");
    for (int r = 0; r < world; ++r) pids_.push_back(spawn_worker(front_end_.address(), r, kind_));
    links_ = front_end_.service.wait_for_workers(world);
    if (int(links_.size()) != world) throw std::runtime_error("not every worker said Hello within 60 s");
  }
  ~Group() {
    front_end_.stop();
    kill_and_reap(pids_);
  }

  // Init -> MemoryReport -> AllocatePools -> PoolsReady, on every rank.
  void start(const Model& model = kTinyDummy) {
    for (int r = 0; r < world_; ++r) {
      ASSERT_EQ(links_[r]->hello.rank(), uint32_t(r));
      if (kind_ == "cpu") {
        ASSERT_EQ(links_[r]->hello.device(), "cpu");
        ASSERT_FALSE(links_[r]->hello.host_comm_address().empty());
      } else {
        ASSERT_EQ(links_[r]->hello.nccl_unique_id().empty(), r != 0) << "GPU rank 0, and only it, makes the NCCL id";
      }
    }
    for (int r = 0; r < world_; ++r) {
      pb::ControlMessage m;
      auto* init = m.mutable_init();
      init->set_model_dir(model.dir);
      init->set_preset(model.preset);
      init->set_load_format(model.dir.empty() ? "dummy" : "auto");
      init->set_seed(1234);
      init->set_rank(r);
      init->set_world_size(world_);
      init->set_device(device_of(kind_, r));
      init->set_nccl_unique_id(links_[0]->hello.nccl_unique_id());
      init->set_kv_page_size(kPageSize);
      init->set_max_num_batched_tokens(256);
      for (auto& link : links_) init->add_host_comm_addresses(link->hello.host_comm_address());
      links_[r]->send(m);
    }
    for (auto& link : links_) {
      auto report = link->receive();
      ASSERT_TRUE(report && report->has_memory()) << "rank " << link->hello.rank() << " sent no MemoryReport";
      EXPECT_GT(report->memory().vocab_size(), 0u);
      EXPECT_EQ(report->memory().model_type(), model.model_type);
      vocab_size_ = report->memory().vocab_size();
    }
    pb::ControlMessage pools;
    pools.mutable_allocate_pools()->set_num_kv_pages(64);
    pools.mutable_allocate_pools()->set_num_gdn_slots(4);
    for (auto& link : links_) link->send(pools);
    for (auto& link : links_) {
      auto ready = link->receive();
      ASSERT_TRUE(ready && ready->has_pools_ready()) << "rank " << link->hello.rank();
      EXPECT_EQ(ready->pools_ready().num_kv_pages(), 64u);
    }
  }

  // Sends the plan to every rank; returns rank 0's result and the round trip (plan sent -> result read).
  std::optional<pb::StepResult> step(const pb::StepPlan& plan, double* round_trip_ms) {
    pb::ControlMessage m;
    *m.mutable_step() = plan;
    const auto sent = Clock::now();
    for (auto& link : links_) link->send(m);
    auto reply = links_[0]->receive();
    *round_trip_ms = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
    if (!reply || !reply->has_step_result()) {
      last_reply_ = reply;
      return std::nullopt;
    }
    return reply->step_result();
  }

  // Greedy generation of two sequences (prefill together, then decode steps), then releases.
  Generation generate(int decode_steps, const Prompts& prompts = kDefaultPrompts) {
    Generation out;
    std::map<uint64_t, uint32_t> length, slot, pages;
    uint64_t step_id = 0;
    uint32_t next_page = 0, next_slot = 1;
    auto chunk_for = [&](pb::StepPlan& plan, uint64_t seq, const std::vector<uint32_t>& tokens, bool first) {
      auto* c = plan.add_sequences();
      c->set_seq_id(seq);
      if (first) slot[seq] = next_slot++;
      c->set_gdn_slot(slot[seq]);
      c->set_reset_slot(first);
      c->set_start_pos(length[seq]);
      for (auto t : tokens) c->add_token_ids(t);
      length[seq] += tokens.size();
      while (pages[seq] * kPageSize < length[seq]) {
        c->add_new_kv_pages(next_page++);
        ++pages[seq];
      }
      c->set_sample(true);
      c->set_sample_index(out.tokens[seq].size());
      if (first) set_greedy(c->mutable_sampling());  // sent once
    };
    for (int s = 0; s <= decode_steps; ++s) {
      pb::StepPlan plan;
      plan.set_step_id(++step_id);
      for (const auto& [seq, prompt] : prompts) {
        chunk_for(plan, seq, s == 0 ? prompt : std::vector<uint32_t>{out.tokens[seq].back()}, s == 0);
      }
      double rtt = 0;
      auto result = step(plan, &rtt);
      if (!result) {
        ADD_FAILURE() << "step " << step_id << ": no StepResult"
                      << (last_reply_ && last_reply_->has_error() ? ": " + last_reply_->error().message() : "");
        return out;
      }
      EXPECT_EQ(result->step_id(), step_id);
      EXPECT_EQ(result->tokens_size(), 2);
      for (const auto& t : result->tokens()) {
        EXPECT_LT(t.token_id(), vocab_size_);
        EXPECT_LE(t.logprob(), 0.f);
        out.tokens[t.seq_id()].push_back(t.token_id());
      }
      if (s > 0) {  // decode steps only: the prefill is a different workload
        out.round_trip_ms.push_back(rtt);
        out.step_ms.push_back(result->step_ms());
        out.forward_ms.push_back(result->forward_ms());
      }
    }
    pb::StepPlan release;
    release.set_step_id(++step_id);
    for (const auto& [seq, prompt] : prompts) release.add_released_seq_ids(seq);
    double rtt = 0;
    auto released = step(release, &rtt);
    EXPECT_TRUE(released && released->tokens_size() == 0) << "a release-only plan gets an empty StepResult";
    return out;
  }

  void shutdown(const std::string& reason) {
    pb::ControlMessage m;
    m.mutable_shutdown()->set_reason(reason);
    for (auto& link : links_) link->send(m);
    for (auto& link : links_) front_end_.service.finish(*link);
  }

  // Every worker's exit code (-1: still running after `limit`).
  std::vector<int> exit_codes(std::chrono::seconds limit = 20s) {
    std::vector<int> codes;
    for (pid_t& p : pids_) {
      codes.push_back(wait_exit(p, limit));
      if (codes.back() != -1) p = -1;
    }
    return codes;
  }

  FrontEnd& front_end() { return front_end_; }
  WorkerLink& link(int rank) { return *links_[rank]; }
  pid_t pid(int rank) const { return pids_[rank]; }

 private:
  int world_;
  std::string kind_;
  FrontEnd front_end_;
  std::vector<pid_t> pids_;
  std::vector<std::shared_ptr<WorkerLink>> links_;
  uint32_t vocab_size_ = 0;
  std::optional<pb::WorkerMessage> last_reply_;
};

void print_round_trip(const std::string& model, int world, const Generation& g) {
  std::printf("control plane, %s, TP=%d, %zu decode steps of 2 sequences: round trip (plan sent -> result "
              "read) median %.3f ms, worker step_ms %.3f, forward_ms %.3f: control-plane cost %.3f ms per step\n",
              model.c_str(), world, g.round_trip_ms.size(), median(g.round_trip_ms), median(g.step_ms),
              median(g.forward_ms), median(g.round_trip_ms) - median(g.step_ms));
}

Generation run_greedy(const Model& model, int world, int decode_steps, const std::string& kind = "cpu") {
  Group group(world, kind);
  group.start(model);
  Generation g = group.generate(decode_steps, fixture_prompts(model));
  group.shutdown("test done");
  for (int code : group.exit_codes()) EXPECT_EQ(code, 0) << "a worker did not exit 0 after Shutdown";
  print_round_trip((model.dir.empty() ? model.preset : model.model_type) + " on " + kind, world, g);
  return g;
}

TEST(WorkerControlPlane, TinyPresetGeneratesAndExitsZeroOnShutdown) {
  auto g = run_greedy(kTinyDummy, 1, 6);
  for (const auto& [seq, tokens] : g.tokens) EXPECT_EQ(tokens.size(), 7u) << "seq " << seq;
}

// Dummy weights are drawn per rank shard, so only real checkpoints are the same model at every TP.
TEST(WorkerControlPlane, Tp2AndTp4CpuWorkersGiveTheTp1GreedyTokensOnTheFixtures) {
  for (const auto& model : kFixtures) {
    const auto tp1 = run_greedy(model, 1, 16);
    EXPECT_EQ(tp1.tokens.size(), 2u);
    for (int world : {2, 4}) {
      const auto tp = run_greedy(model, world, 16);
      EXPECT_EQ(tp.tokens, tp1.tokens) << model.dir << " at TP=" << world;
    }
  }
}

// On a GPU host: the same through NCCL, one GPU per rank (TP=1 only with one GPU; skipped without).
TEST(WorkerControlPlane, GpuTp2AndTp4GiveTheGpuTp1GreedyTokensOnTheFixtures) {
  const int gpus = int(ds::kernels::list_cuda_devices().size());
  if (gpus < 1) GTEST_SKIP() << "no GPU visible";
  for (const auto& model : kFixtures) {
    const auto tp1 = run_greedy(model, 1, 16, "cuda");
    for (const auto& [seq, tokens] : tp1.tokens) EXPECT_EQ(tokens.size(), 17u) << model.dir << " seq " << seq;
    for (int world = 2; world <= std::min(gpus, 4); world *= 2) {
      const auto tp = run_greedy(model, world, 16, "cuda");
      EXPECT_EQ(tp.tokens, tp1.tokens) << model.dir << " at TP=" << world << " on GPUs";
    }
  }
}

// `scancel` or a container stop sends SIGTERM to every process at once; a spawned worker must keep
// serving the front end's drain and leave only on Shutdown.
TEST(WorkerControlPlane, AnExitWithParentWorkerIgnoresSigtermAndStopsOnShutdown) {
  Group group(2);
  group.start(kTinyDummy);
  for (int r = 0; r < 2; ++r) kill(group.pid(r), SIGTERM);
  const Generation g = group.generate(3);
  for (const auto& [seq, tokens] : g.tokens) EXPECT_EQ(tokens.size(), 4u) << "seq " << seq << " after SIGTERM";
  group.shutdown("test done");
  for (int code : group.exit_codes()) EXPECT_EQ(code, 0) << "a worker did not exit 0 on Shutdown after SIGTERM";
}

TEST(WorkerControlPlane, ABadPlanIsReportedAsWorkerErrorAndTheWorkerExitsNonZero) {
  Group group(1);
  group.start(kFixtures[0]);
  pb::ControlMessage m;
  auto* c = m.mutable_step()->add_sequences();
  m.mutable_step()->set_step_id(5);
  c->set_seq_id(1);
  c->set_gdn_slot(0);  // the scratch slot
  c->set_reset_slot(true);
  c->add_token_ids(1);
  c->add_new_kv_pages(0);
  group.link(0).send(m);
  auto reply = group.link(0).receive();
  group.front_end().service.finish(group.link(0));
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().step_id(), 5u);
  EXPECT_EQ(reply->error().rank(), 0u);
  EXPECT_NE(reply->error().message().find("scratch slot"), std::string::npos) << reply->error().message();
  EXPECT_EQ(group.exit_codes()[0], 1);
}

TEST(WorkerControlPlane, AKilledPeerMakesRankZeroReportInsteadOfHanging) {
  Group group(2);
  group.start(kFixtures[0]);
  kill(group.pid(1), SIGKILL);
  pb::StepPlan plan;
  plan.set_step_id(1);
  auto* c = plan.add_sequences();
  c->set_seq_id(1);
  c->set_gdn_slot(1);
  c->set_reset_slot(true);
  c->add_token_ids(42);
  c->add_new_kv_pages(0);
  c->set_sample(true);
  set_greedy(c->mutable_sampling());
  pb::ControlMessage m;
  *m.mutable_step() = plan;
  group.link(0).send(m);
  auto reply = group.link(0).receive();
  group.front_end().service.finish(group.link(0));
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_NE(reply->error().message().find("rank 1"), std::string::npos) << reply->error().message();
  const auto codes = group.exit_codes();
  EXPECT_EQ(codes[0], 1);
  EXPECT_EQ(codes[1], 128 + SIGKILL);
}

TEST(WorkerControlPlane, TheFrontEndDisappearingMidRunMakesEveryWorkerExit) {
  Group group(2);
  group.start(kFixtures[0]);
  group.generate(2);
  group.front_end().stop();  // cancels the streams, as a dying front end's closed sockets do
  for (int code : group.exit_codes(15s)) EXPECT_EQ(code, 3) << "expected the 'front end gone' exit code";
}

TEST(WorkerControlPlane, KillingTheSpawningProcessKillsItsExitWithParentWorker) {
  // Orphans are re-parented to this test (a subreaper), so we can see how the worker ends.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  ASSERT_EQ(access(kBinary.c_str(), X_OK), 0) << kBinary << " is missing";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t spawner = fork();
  if (spawner == 0) {
    // A stand-in front end: starts a worker pointed at a port where nobody listens (it keeps
    // retrying for 60 s), reports its pid, and waits to be killed.
    pid_t worker = spawn({kBinary, "worker", "--connect", "127.0.0.1:9", "--rank", "0", "--device", "cpu",
                          "--parent-pid", std::to_string(getpid()), "--connect-timeout", "60"});
    if (::write(fds[1], &worker, sizeof(worker)) != sizeof(worker)) _exit(1);
    pause();
    _exit(0);
  }
  close(fds[1]);
  pid_t worker = -1;
  ASSERT_EQ(::read(fds[0], &worker, sizeof(worker)), ssize_t(sizeof(worker)));
  close(fds[0]);
  ASSERT_GT(worker, 0);
  std::this_thread::sleep_for(500ms);  // let the worker get past its start-up
  kill(spawner, SIGKILL);
  EXPECT_EQ(wait_exit(spawner, 5s), 128 + SIGKILL);
  const int code = wait_exit(worker, 10s);
  if (code == -1) kill_and_reap({worker});
  // SIGKILL from PR_SET_PDEATHSIG; or, when the spawner died before the worker got that far, the
  // worker's own check of its parent pid makes it exit 1.
  EXPECT_TRUE(code == 128 + SIGKILL || code == 1) << "the worker outlived its spawner (code " << code << ")";
}

}  // namespace
