#include "server/workers/worker_group.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace ds::server {

namespace {
// How long local workers of a failed group get to exit on their own (they see their control
// stream cancelled) before SIGKILL.
constexpr std::chrono::seconds kFailedWorkersKillGrace{3};
}  // namespace

struct WorkerGroup::Connection {
  int rank = -1;
  control::Hello hello;
  grpc::ServerContext* context = nullptr;
  grpc::ServerReaderWriter<control::ControlMessage, control::WorkerMessage>* stream = nullptr;
  std::mutex write_mutex;  // one writer at a time; guards `open`
  bool open = true;
  std::optional<control::MemoryReport> memory;  // under WorkerGroup::mutex_
  std::optional<control::PoolsReady> pools_ready;

  // Ends the stream from our side; a no-op once the handler has seen it end.
  void cancel() {
    std::lock_guard lock(write_mutex);
    if (open) context->TryCancel();
  }

  bool write(const control::ControlMessage& message) {
    std::lock_guard lock(write_mutex);
    return open && stream->Write(message);
  }
};

class WorkerGroup::Service final : public control::WorkerControl::Service {
 public:
  explicit Service(WorkerGroup& group) : group_(group) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<control::ControlMessage, control::WorkerMessage>* stream) override {
    control::WorkerMessage message;
    if (!stream->Read(&message)) return grpc::Status(grpc::StatusCode::CANCELLED, "no Hello");
    if (!message.has_hello()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be Hello");
    std::shared_ptr<Connection> connection;
    grpc::Status status = group_.attach(message.hello(), stream, context, connection);
    if (!status.ok()) return status;
    while (stream->Read(&message)) group_.on_message(*connection, message);
    group_.on_disconnect(*connection);
    return grpc::Status::OK;
  }

 private:
  WorkerGroup& group_;
};

PoolSizes size_pools(const std::vector<control::MemoryReport>& reports, int max_running_requests, int max_kv_pages) {
  if (reports.empty()) throw std::runtime_error("pool sizing: no MemoryReport");
  int64_t slots = static_cast<int64_t>(max_running_requests) + 1;
  int64_t pages = max_kv_pages > 0 ? max_kv_pages : std::numeric_limits<int32_t>::max();
  for (const auto& r : reports) {
    uint64_t free = r.free_bytes();
    int64_t rank_slots = slots;
    if (r.gdn_slot_bytes() > 0) rank_slots = std::min<int64_t>(rank_slots, (free / 2) / r.gdn_slot_bytes());
    uint64_t rest = free - static_cast<uint64_t>(std::max<int64_t>(rank_slots, 0)) * r.gdn_slot_bytes();
    int64_t rank_pages = r.kv_page_bytes() > 0 ? static_cast<int64_t>(rest / r.kv_page_bytes()) : pages;
    slots = std::min(slots, rank_slots);
    pages = std::min(pages, rank_pages);
  }
  if (slots < 2 || pages < 1) {
    throw std::runtime_error("not enough memory for the caches: " + std::to_string(std::max<int64_t>(slots - 1, 0)) +
                             " GDN slots and " + std::to_string(std::max<int64_t>(pages, 0)) +
                             " KV pages fit (raise --mem-fraction or use more ranks)");
  }
  return PoolSizes{static_cast<int>(pages), static_cast<int>(slots)};
}

NodeRanks node_ranks(int world_size, int nnodes, int node_rank, bool dedicated_frontend) {
  if (world_size < 1) throw std::invalid_argument("--tp must be at least 1");
  if (nnodes < 1 || node_rank < 0 || node_rank >= nnodes) throw std::invalid_argument("--node-rank must be below --nnodes");
  if (dedicated_frontend && nnodes < 2) throw std::invalid_argument("--dedicated-frontend needs --nnodes 2 or more (node 0 hosts no rank)");
  int rank_nodes = dedicated_frontend ? nnodes - 1 : nnodes;
  if (world_size % rank_nodes != 0) {
    throw std::invalid_argument("--tp " + std::to_string(world_size) + " does not split evenly over " + std::to_string(rank_nodes) +
                                (dedicated_frontend ? " worker nodes (--nnodes minus the dedicated front end)" : " nodes (--nnodes)"));
  }
  int per_node = world_size / rank_nodes;
  if (dedicated_frontend) return node_rank == 0 ? NodeRanks{0, 0} : NodeRanks{(node_rank - 1) * per_node, per_node};
  return NodeRanks{node_rank * per_node, per_node};
}

WorkerGroup::WorkerGroup(WorkerGroupOptions options, std::function<void(const std::string&)> on_failure)
    : options_(std::move(options)), on_failure_(std::move(on_failure)) {
  local_ranks_ = node_ranks(options_.world_size, options_.nnodes, options_.node_rank, options_.dedicated_frontend);
}

WorkerGroup::~WorkerGroup() { shutdown("front end exiting"); }

std::string WorkerGroup::failure() const {
  std::lock_guard lock(mutex_);
  return failure_.value_or("");
}

void WorkerGroup::fail(const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) return;
    if (failure_) {
      // Later causes often name the root (the process that died) after its peers' symptoms.
      if (failure_->find(message) == std::string::npos && failure_->size() < 2000) {
        *failure_ += "; " + message;
        spdlog::error("worker group: also {}", message);
        if (on_failure_) on_failure_(*failure_);
      }
      return;
    }
    failure_ = message;
  }
  spdlog::error("worker group failed: {}; stopping the other workers", message);
  changed_.notify_all();
  // The survivors would wait forever in their next collective: stop local ones, cut remote ones
  // off. Local workers ignore SIGTERM (it is for the drain, see worker --exit-with-parent) and
  // one blocked in a collective never reads its cancelled stream, hence SIGKILL after the grace.
  children_.terminate_all_async(kFailedWorkersKillGrace);
  {
    std::lock_guard lock(mutex_);
    for (const auto& [rank, c] : ranks_) c->cancel();
  }
  if (on_failure_) on_failure_(message);
}

grpc::Status WorkerGroup::attach(const control::Hello& hello,
                                 grpc::ServerReaderWriter<control::ControlMessage, control::WorkerMessage>* stream,
                                 grpc::ServerContext* context, std::shared_ptr<Connection>& out) {
  int rank = static_cast<int>(hello.rank());
  std::lock_guard lock(mutex_);
  if (rank >= options_.world_size) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rank " + std::to_string(rank) + " is outside the world of " + std::to_string(options_.world_size));
  }
  if (ranks_.contains(rank)) {
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "rank " + std::to_string(rank) + " is already connected");
  }
  auto connection = std::make_shared<Connection>();
  connection->rank = rank;
  connection->hello = hello;
  connection->context = context;
  connection->stream = stream;
  ranks_[rank] = connection;
  spdlog::info("worker rank {} attached from {} ({})", rank, hello.hostname(), hello.device());
  out = connection;
  changed_.notify_all();
  return grpc::Status::OK;
}

void WorkerGroup::on_message(Connection& connection, const control::WorkerMessage& message) {
  switch (message.kind_case()) {
    case control::WorkerMessage::kMemory: {
      std::lock_guard lock(mutex_);
      connection.memory = message.memory();
      break;
    }
    case control::WorkerMessage::kPoolsReady: {
      std::lock_guard lock(mutex_);
      connection.pools_ready = message.pools_ready();
      break;
    }
    case control::WorkerMessage::kStepResult: {
      if (connection.rank != 0) return;  // only rank 0's result carries the tokens
      std::lock_guard lock(mutex_);
      if (message.step_result().step_id() == awaited_step_) result_ = message.step_result();
      break;
    }
    case control::WorkerMessage::kError:
      fail("worker rank " + std::to_string(connection.rank) + ": " + message.error().message());
      return;
    default:
      fail("worker rank " + std::to_string(connection.rank) + " sent an unexpected message");
      return;
  }
  changed_.notify_all();
}

void WorkerGroup::on_disconnect(Connection& connection) {
  {
    std::lock_guard lock(connection.write_mutex);
    connection.open = false;
  }
  {
    std::lock_guard lock(mutex_);
    if (failure_) return;  // a consequence: the group cancels every stream when it fails
  }
  fail("worker rank " + std::to_string(connection.rank) + " disconnected");
}

void WorkerGroup::spawn_local_workers() {
  for (int i = 0; i < local_ranks_.count; ++i) {
    int rank = local_ranks_.first + i;
    std::string device = i < static_cast<int>(options_.local_devices.size()) ? options_.local_devices[i] : "cpu";
    std::vector<std::string> argv = {options_.worker_binary, "worker", "--connect",
                                     options_.connect_host + ":" + std::to_string(bound_port_), "--rank",
                                     std::to_string(rank), "--device", device, "--exit-with-parent"};
    pid_t pid = children_.spawn(argv, [this, rank](pid_t pid, const std::string& how) {
      fail("worker rank " + std::to_string(rank) + " (pid " + std::to_string(pid) + ") " + how);
    });
    spdlog::info("spawned worker rank {} on {} (pid {})", rank, device, pid);
  }
}

void WorkerGroup::wait_for(std::unique_lock<std::mutex>& lock, const std::function<bool()>& pred, const char* what) {
  bool ok = changed_.wait_for(lock, options_.startup_timeout, [&] { return failure_ || pred(); });
  if (failure_) throw std::runtime_error(std::string("while ") + what + ": " + *failure_);
  if (!ok) throw std::runtime_error(std::string("timed out ") + what);
}

void WorkerGroup::send_to_all(const control::ControlMessage& message) {
  std::vector<std::shared_ptr<Connection>> connections;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [rank, c] : ranks_) connections.push_back(c);
  }
  for (const auto& c : connections) {
    if (!c->write(message)) fail("cannot send to worker rank " + std::to_string(c->rank) + ": its stream is closed");
  }
}

void WorkerGroup::start() {
  service_ = std::make_unique<Service>(*this);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.control_host + ":" + std::to_string(options_.control_port),
                           grpc::InsecureServerCredentials(), &bound_port_);
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || bound_port_ == 0) {
    throw std::runtime_error("cannot listen for workers on " + options_.control_host + ":" + std::to_string(options_.control_port));
  }
  spdlog::info("worker control plane listening on {}:{}", options_.control_host, bound_port_);
  spawn_local_workers();

  std::unique_lock lock(mutex_);
  wait_for(lock, [&] { return static_cast<int>(ranks_.size()) == options_.world_size; }, "waiting for every worker to connect");
  control::ControlMessage init_message;
  auto* init = init_message.mutable_init();
  init->set_model_dir(options_.model_dir);
  init->set_preset(options_.preset);
  init->set_load_format(options_.load_format);
  init->set_world_size(static_cast<uint32_t>(options_.world_size));
  init->set_nccl_unique_id(ranks_.at(0)->hello.nccl_unique_id());
  for (const auto& [rank, c] : ranks_) init->add_host_comm_addresses(c->hello.host_comm_address());
  init->set_gdn_projection(options_.gdn_projection);
  init->set_fp8_numerics(options_.fp8_numerics);
  init->set_kv_page_size(static_cast<uint32_t>(options_.kv_page_size));
  init->set_mem_fraction(options_.mem_fraction);
  init->set_seed(options_.seed);
  init->set_max_num_batched_tokens(static_cast<uint32_t>(options_.max_num_batched_tokens));
  init->set_cuda_graph_max_bs(static_cast<uint32_t>(options_.cuda_graph_max_bs));
  std::vector<std::shared_ptr<Connection>> connections;
  for (const auto& [rank, c] : ranks_) connections.push_back(c);
  lock.unlock();
  for (const auto& c : connections) {
    init->set_rank(static_cast<uint32_t>(c->rank));
    // Local ranks get the device they were spawned with; remote ones keep their own (empty).
    std::string device;
    size_t local = static_cast<size_t>(c->rank - local_ranks_.first);
    if (c->rank >= local_ranks_.first && local < options_.local_devices.size()) device = options_.local_devices[local];
    init->set_device(device);
    if (!c->write(init_message)) fail("cannot send Init to worker rank " + std::to_string(c->rank));
  }
  lock.lock();
  wait_for(lock, [&] { return std::all_of(connections.begin(), connections.end(), [](auto& c) { return c->memory.has_value(); }); },
           "waiting for the workers to load the model");
  std::vector<control::MemoryReport> reports;
  for (const auto& c : connections) reports.push_back(*c->memory);
  const auto& r0 = *connections.front()->memory;
  facts_ = ModelFacts{static_cast<int>(r0.vocab_size()), static_cast<int>(r0.max_context_length()), r0.model_type()};
  int max_kv_pages = options_.max_kv_pages;
  bool all_cpu = std::all_of(connections.begin(), connections.end(), [](auto& c) { return c->hello.device() == "cpu"; });
  if (max_kv_pages == 0 && all_cpu) max_kv_pages = options_.cpu_max_kv_pages;
  pools_ = size_pools(reports, options_.max_running_requests, max_kv_pages);
  lock.unlock();

  control::ControlMessage allocate;
  allocate.mutable_allocate_pools()->set_num_kv_pages(static_cast<uint32_t>(pools_.num_kv_pages));
  allocate.mutable_allocate_pools()->set_num_gdn_slots(static_cast<uint32_t>(pools_.num_gdn_slots));
  send_to_all(allocate);
  lock.lock();
  wait_for(lock, [&] { return std::all_of(connections.begin(), connections.end(), [](auto& c) { return c->pools_ready.has_value(); }); },
           "waiting for the workers to allocate their caches");
  for (const auto& c : connections) {
    if (static_cast<int>(c->pools_ready->num_kv_pages()) != pools_.num_kv_pages ||
        static_cast<int>(c->pools_ready->num_gdn_slots()) != pools_.num_gdn_slots) {
      throw std::runtime_error("worker rank " + std::to_string(c->rank) + " allocated " +
                               std::to_string(c->pools_ready->num_kv_pages()) + " KV pages and " +
                               std::to_string(c->pools_ready->num_gdn_slots()) + " GDN slots, not the " +
                               std::to_string(pools_.num_kv_pages) + " and " + std::to_string(pools_.num_gdn_slots) + " asked");
    }
  }
  spdlog::info("workers ready: {} ranks, {} KV pages of {} tokens, {} GDN slots", options_.world_size, pools_.num_kv_pages,
               options_.kv_page_size, pools_.num_gdn_slots - 1);
}

control::StepResult WorkerGroup::execute(const control::StepPlan& plan) {
  {
    std::lock_guard lock(mutex_);
    if (failure_) throw std::runtime_error(*failure_);
    awaited_step_ = plan.step_id();
    result_.reset();
  }
  control::ControlMessage message;
  *message.mutable_step() = plan;
  send_to_all(message);
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return failure_ || result_.has_value(); });
  if (failure_) throw std::runtime_error(*failure_);
  control::StepResult result = std::move(*result_);
  result_.reset();
  return result;
}

void WorkerGroup::shutdown(const std::string& reason) {
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) return;
    shutting_down_ = true;
  }
  changed_.notify_all();
  control::ControlMessage message;
  message.mutable_shutdown()->set_reason(reason);
  std::vector<std::shared_ptr<Connection>> connections;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [rank, c] : ranks_) connections.push_back(c);
  }
  for (const auto& c : connections) c->write(message);
  // Shutdown is what stops them (they ignore SIGTERM); SIGKILL after 5 s for one that cannot.
  children_.terminate_all(std::chrono::seconds(5));
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace ds::server
