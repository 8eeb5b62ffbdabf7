#include "worker/process/worker_process.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "kernels/device.h"
#include "proto/worker.grpc.pb.h"
#include "weights/model_config.h"
#include "worker/comm/host_communicator.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/comm/tcp.h"
#include "worker/model_runner.h"
#include "worker/process/plan_decoder.h"

namespace ds::worker {
namespace {

namespace pb = deltaserve::worker::v1;
using Clock = std::chrono::steady_clock;

// "cpu" -> nullopt, "cuda:N" -> N.
std::optional<int> cuda_index(const std::string& device) {
  if (device == "cpu") return std::nullopt;
  if (device.starts_with("cuda:") && device.size() > 5 && device.find_first_not_of("0123456789", 5) == std::string::npos) {
    return std::stoi(device.substr(5));
  }
  throw std::invalid_argument("--device '" + device + "' is neither \"cpu\" nor \"cuda:N\"");
}

// What the Hello reports as the device: "cpu", or the GPU's name.
std::string describe_device(const std::string& device) {
  const auto index = cuda_index(device);
  if (!index) return "cpu";
  for (const auto& d : kernels::list_cuda_devices()) {
    if (d.index == *index) return d.name;
  }
  throw std::runtime_error("--device " + device + ": no such GPU is visible to this process");
}

std::string this_hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Thrown when the control stream cannot carry a message: the front end is gone.
struct FrontEndGone : std::runtime_error {
  using std::runtime_error::runtime_error;
};

RunnerOptions runner_options(const pb::Init& init, Communicator* comm) {
  RunnerOptions o;
  o.model_dir = init.model_dir();
  o.preset = init.preset();
  if (init.load_format() == "dummy") {
    o.dummy_weights = true;
  } else if (!init.load_format().empty() && init.load_format() != "auto") {
    throw std::invalid_argument("Init.load_format '" + init.load_format() + "' is neither \"auto\" nor \"dummy\"");
  }
  o.seed = init.seed();
  o.device = init.device();
  if (!init.gdn_projection().empty()) o.gdn_projection = init.gdn_projection();
  if (!init.fp8_numerics().empty()) o.fp8_numerics = init.fp8_numerics();
  if (init.kv_page_size() > 0) o.kv_page_size = int(init.kv_page_size());
  if (init.mem_fraction() > 0) o.mem_fraction = init.mem_fraction();
  if (init.max_num_batched_tokens() > 0) o.max_num_batched_tokens = int(init.max_num_batched_tokens());
  if (init.has_cuda_graph_max_bs()) o.cuda_graph_max_bs = int(init.cuda_graph_max_bs());
  o.comm = comm;
  return o;
}

weights::ModelConfig model_config_of(const pb::Init& init) {
  return init.model_dir().empty() ? weights::preset_config(init.preset())
                                  : weights::parse_model_config(init.model_dir() + "/config.json");
}

class WorkerSession {
 public:
  explicit WorkerSession(const WorkerProcessOptions& options) : options_(options) {}

  int run() {
    try {
      open_stream();
      send_hello();
      while (true) {
        pb::ControlMessage message;
        if (!stream_->Read(&message)) return front_end_gone();
        if (message.has_shutdown()) return shutdown(message.shutdown());
        handle(message);
      }
    } catch (const FrontEndGone& e) {
      spdlog::error("{}", e.what());
      return front_end_gone();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }

 private:
  void open_stream() {
    grpc::ChannelArguments args;
    // A front end on another host can vanish without closing the connection: ping it.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetMaxReceiveMessageSize(256 << 20);  // a long prompt's prefill plan
    args.SetMaxSendMessageSize(256 << 20);
    auto channel = grpc::CreateCustomChannel(options_.connect, grpc::InsecureChannelCredentials(), args);
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::milliseconds(int64_t(options_.connect_timeout_s * 1000));
    if (!channel->WaitForConnected(deadline)) {
      throw std::runtime_error("cannot reach the front end at " + options_.connect + " within " +
                               std::to_string(options_.connect_timeout_s) + " s");
    }
    stub_ = pb::WorkerControl::NewStub(channel);
    context_ = std::make_unique<grpc::ClientContext>();
    stream_ = stub_->Connect(context_.get());
    spdlog::info("connected to the front end at {}", options_.connect);
  }

  void send_hello() {
    pb::WorkerMessage message;
    auto* hello = message.mutable_hello();
    hello->set_rank(uint32_t(options_.rank));
    hello->set_hostname(this_hostname());
    hello->set_device(describe_device(options_.device));
    if (!cuda_index(options_.device)) {
      const std::string host = options_.comm_host.empty()
                                   ? tcp::local_address_towards(tcp::parse_host_port(options_.connect).host)
                                   : options_.comm_host;
      listener_ = HostCommListener::open(host);
      hello->set_host_comm_address(listener_->address());
    } else if (options_.rank == 0) {
      // This process hosts NCCL's bootstrap root; the front end forwards the id to every rank.
      hello->set_nccl_unique_id(new_nccl_unique_id());
    }
    send(message);
  }

  void handle(const pb::ControlMessage& message) {
    switch (message.kind_case()) {
      case pb::ControlMessage::kInit:
        expect_phase(Phase::kHello, "Init");
        on_init(message.init());
        phase_ = Phase::kInitialised;
        return;
      case pb::ControlMessage::kAllocatePools:
        expect_phase(Phase::kInitialised, "AllocatePools");
        on_allocate_pools(message.allocate_pools());
        phase_ = Phase::kServing;
        return;
      case pb::ControlMessage::kStep:
        expect_phase(Phase::kServing, "StepPlan");
        on_step(message.step());
        return;
      default:
        throw std::runtime_error("control message with no known kind (a newer front end?)");
    }
  }

  enum class Phase { kHello, kInitialised, kServing };

  void expect_phase(Phase expected, const char* what) const {
    static const char* names[] = {"before Init", "after Init, before AllocatePools", "serving steps"};
    if (phase_ != expected) {
      throw std::runtime_error(std::string("protocol error: ") + what + " received while " + names[int(phase_)]);
    }
  }

  void on_init(const pb::Init& init) {
    if (int(init.rank()) != options_.rank || init.world_size() == 0 || init.rank() >= init.world_size()) {
      throw std::invalid_argument("Init is for rank " + std::to_string(init.rank()) + " of " +
                                  std::to_string(init.world_size()) + ", this is rank " + std::to_string(options_.rank));
    }
    if (!init.device().empty() && init.device() != options_.device) {
      throw std::invalid_argument("Init.device is " + init.device() + " but this worker was started with --device " +
                                  options_.device);
    }
    pb::Init effective = init;
    effective.set_device(options_.device);
    comm_ = make_communicator(effective);
    const auto start = Clock::now();
    const RunnerOptions runner_opts = runner_options(effective, comm_.get());
    runner_ = ModelRunner::create(runner_opts);
    // GPU ranks' communicators (NCCL, or the runner's own single rank) can be captured; CPU ranks' cannot.
    const bool graphs = cuda_index(options_.device).has_value() && runner_opts.cuda_graph_max_bs > 0;
    spdlog::info("rank {}/{} on {}: model loaded in {:.1f} ms; {}", init.rank(), init.world_size(), options_.device,
                 ms_since(start),
                 graphs ? "decode steps of up to " + std::to_string(runner_opts.cuda_graph_max_bs) +
                              " sequences replay CUDA graphs"
                        : std::string("no CUDA graphs"));
    const auto report = runner_->memory_report();
    decoder_.emplace(runner_options(effective, nullptr).kv_page_size, runner_->vocab_size());
    const auto config = model_config_of(effective);

    pb::WorkerMessage message;
    auto* m = message.mutable_memory();
    m->set_free_bytes(report.free_bytes);
    m->set_weight_bytes(report.weight_bytes);
    m->set_kv_page_bytes(report.kv_page_bytes);
    m->set_gdn_slot_bytes(report.gdn_slot_bytes);
    m->set_vocab_size(uint32_t(runner_->vocab_size()));
    m->set_max_context_length(uint32_t(config.max_position_embeddings));
    m->set_model_type(config.model_type);
    send(message);
  }

  std::unique_ptr<Communicator> make_communicator(const pb::Init& init) {
    const int world = int(init.world_size());
    if (world == 1) return nullptr;  // the runner makes its own single-rank communicator
    if (const auto gpu = cuda_index(options_.device)) {
      if (init.nccl_unique_id().empty()) {
        throw std::invalid_argument("Init.nccl_unique_id is empty: GPU ranks need the id from rank 0's Hello");
      }
      return std::make_unique<NcclCommunicator>(init.nccl_unique_id(), options_.rank, world, *gpu);
    }
    if (init.host_comm_addresses_size() != world) {
      throw std::invalid_argument("Init.host_comm_addresses lists " + std::to_string(init.host_comm_addresses_size()) +
                                  " addresses for a world of " + std::to_string(world));
    }
    HostCommOptions comm_options;
    comm_options.connect_timeout = std::chrono::milliseconds(int64_t(options_.connect_timeout_s * 1000));
    std::vector<std::string> addresses(init.host_comm_addresses().begin(), init.host_comm_addresses().end());
    auto comm = HostCommunicator::connect(std::move(*listener_), options_.rank, addresses, comm_options);
    listener_.reset();
    return comm;
  }

  void on_allocate_pools(const pb::AllocatePools& pools) {
    runner_->allocate_pools(int(pools.num_kv_pages()), int(pools.num_gdn_slots()));
    pb::WorkerMessage message;
    message.mutable_pools_ready()->set_num_kv_pages(pools.num_kv_pages());
    message.mutable_pools_ready()->set_num_gdn_slots(pools.num_gdn_slots());
    send(message);
  }

  // Every rank runs the step (the collectives need all of them); only rank 0 answers.
  void on_step(const pb::StepPlan& plan) {
    const auto received = Clock::now();
    current_step_ = plan.step_id();
    const auto batch = decoder_->decode(plan);
    const auto forward_start = Clock::now();
    std::vector<SampledToken> tokens;
    if (!batch.empty()) tokens = runner_->step(batch);
    const double forward_ms = ms_since(forward_start);
    if (options_.rank != 0) return;

    pb::WorkerMessage message;
    auto* result = message.mutable_step_result();
    result->set_step_id(plan.step_id());
    for (const auto& t : tokens) {
      auto* out = result->add_tokens();
      out->set_seq_id(t.seq_id);
      out->set_token_id(uint32_t(t.token_id));
      out->set_logprob(t.logprob);
    }
    result->set_forward_ms(forward_ms);
    result->set_step_ms(ms_since(received));
    send(message);
  }

  void send(const pb::WorkerMessage& message) {
    if (!stream_->Write(message)) throw FrontEndGone("the control stream to " + options_.connect + " is closed");
  }

  int shutdown(const pb::Shutdown& shutdown) {
    spdlog::info("shutdown: {}", shutdown.reason().empty() ? "(no reason given)" : shutdown.reason());
    close_stream();
    return kExitShutdown;
  }

  int front_end_gone() {
    const grpc::Status status = close_stream();
    spdlog::error("the front end at {} went away ({}); exiting", options_.connect,
                  status.ok() ? "stream ended" : status.error_message());
    return kExitFrontEndGone;
  }

  int fail(const std::string& what) {
    spdlog::error("rank {} failed{}: {}", options_.rank,
                  current_step_ ? " in step " + std::to_string(current_step_) : std::string(), what);
    if (stream_) {
      pb::WorkerMessage message;
      auto* error = message.mutable_error();
      error->set_rank(uint32_t(options_.rank));
      error->set_message(what);
      error->set_step_id(current_step_);
      stream_->Write(message);  // best effort: the front end may be the thing that failed
      close_stream();
    }
    return kExitError;
  }

  // Half-closes our side and waits briefly for the front end to end the call; a front end that
  // never does must not keep this process alive.
  grpc::Status close_stream() {
    stream_->WritesDone();
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::thread watchdog([&] {
      std::unique_lock lock(mutex);
      if (!done_cv.wait_for(lock, std::chrono::seconds(5), [&] { return done; })) context_->TryCancel();
    });
    grpc::Status status = stream_->Finish();
    {
      std::lock_guard lock(mutex);
      done = true;
    }
    done_cv.notify_one();
    watchdog.join();
    return status;
  }

  WorkerProcessOptions options_;
  std::unique_ptr<pb::WorkerControl::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::WorkerMessage, pb::ControlMessage>> stream_;
  Phase phase_ = Phase::kHello;
  uint64_t current_step_ = 0;
  std::optional<HostCommListener> listener_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<ModelRunner> runner_;  // after comm_: destroyed first, it uses the communicator
  std::optional<PlanDecoder> decoder_;
};

// A spawned worker belongs to its spawner (a front end, or a node's `serve`), which stops it with
// Shutdown once in-flight requests have drained. So it ignores SIGTERM: `scancel`, systemd or a
// container runtime send SIGTERM to every process of the job at once, and a worker that died then
// would fail the very requests the front end is draining. It is SIGKILLed when the spawning thread
// exits (PR_SET_PDEATHSIG follows the thread that forked us, so spawn workers from a long-lived
// thread), so a spawner's death, however it dies, leaves no worker behind.
void die_with_parent(int parent_pid) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) throw std::runtime_error("prctl(PR_SET_PDEATHSIG) failed");
  const pid_t parent = getppid();
  if (parent == 1 || (parent_pid > 0 && parent != parent_pid)) {
    throw std::runtime_error("--exit-with-parent: the spawning process is already gone");
  }
  signal(SIGTERM, SIG_IGN);
}

}  // namespace

int run_worker_process(const WorkerProcessOptions& options) {
  spdlog::set_pattern("[%H:%M:%S.%e] [worker " + std::to_string(options.rank) + "] [%^%l%$] %v");
  try {
    if (options.exit_with_parent || options.parent_pid > 0) die_with_parent(options.parent_pid);
    if (options.rank < 0) throw std::invalid_argument("--rank must be >= 0");
    cuda_index(options.device);  // validates the flag before any connection
    tcp::parse_host_port(options.connect);
    if (cuda_index(options.device)) disable_nccl_nvls_unless_set();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitError;
  }
  WorkerSession session(options);
  return session.run();
}

}  // namespace ds::worker
