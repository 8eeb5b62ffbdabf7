// The front end's side of the control plane (proto/worker.proto): the WorkerControl gRPC server
// that workers connect to, the local worker processes it spawns, the start-up handshake
// (Hello → Init → MemoryReport → AllocatePools → PoolsReady), and the step loop (one plan to
// every rank, rank 0's StepResult back). Workers started on other hosts attach the same way
// until the world is complete. Any worker dying, erroring or disconnecting fails the group: the
// current step throws, on_failure runs (again, with every cause so far, when more follow), and
// the remaining workers are stopped.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proto/worker.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/workers/child_processes.h"

namespace ds::server {

struct WorkerGroupOptions {
  int world_size = 1;
  int nnodes = 1;
  int node_rank = 0;
  bool dedicated_frontend = false;  // node 0 hosts no rank; nodes 1.. host them all
  std::string control_host = "127.0.0.1";  // where the control server listens
  int control_port = 0;                    // 0: any free port (single node)
  std::string connect_host = "127.0.0.1";  // how local workers reach it
  std::string worker_binary;               // the deltaserve executable
  std::vector<std::string> local_devices;  // device of each local rank ("cpu" or "cuda:N")

  // Forwarded in Init.
  std::string model_dir;
  std::string preset;
  std::string load_format = "auto";
  std::string gdn_projection = "fused";
  std::string fp8_numerics = "w8a8";
  int kv_page_size = 64;
  double mem_fraction = 0.9;
  uint64_t seed = 0;
  int max_num_batched_tokens = 8192;
  int cuda_graph_max_bs = 64;

  int max_running_requests = 256;  // sizes the GDN slot pool
  int max_kv_pages = 0;            // 0: as many as memory allows, or cpu_max_kv_pages when every
  int cpu_max_kv_pages = 0;        // rank (local or not) is a CPU rank: host memory is shared
  std::chrono::seconds startup_timeout{600};
};

struct ModelFacts {
  int vocab_size = 0;
  int max_context_length = 0;
  std::string model_type;
};

struct PoolSizes {
  int num_kv_pages = 0;
  int num_gdn_slots = 0;  // including the scratch slot
};

// The ranks one node hosts: --tp ranks split evenly over the nodes that host ranks, which are all
// nnodes nodes, or nodes 1..nnodes-1 when node 0 is a dedicated front end (then node 0 hosts none).
// Every node derives its share from the same (world_size, nnodes, dedicated_frontend).
// Throws std::invalid_argument when the ranks do not split evenly.
struct NodeRanks {
  int first = 0;
  int count = 0;
};
NodeRanks node_ranks(int world_size, int nnodes, int node_rank, bool dedicated_frontend);

// Pool sizes from every rank's MemoryReport: the minimum over ranks of what fits in free_bytes,
// GDN slots first (max_running_requests + scratch, at most half the memory), then KV pages.
// Throws std::runtime_error when not even one slot and one page fit.
PoolSizes size_pools(const std::vector<control::MemoryReport>& reports, int max_running_requests, int max_kv_pages);

class WorkerGroup : public StepExecutor {
 public:
  WorkerGroup(WorkerGroupOptions options, std::function<void(const std::string&)> on_failure);
  ~WorkerGroup() override;

  // Starts the control server, spawns the local workers and runs the handshake.
  // Throws std::runtime_error with the cause (a worker failed to start or load, timeout).
  void start();
  control::StepResult execute(const control::StepPlan& plan) override;
  // Sends Shutdown to every worker and stops the control server; no process is left behind.
  void shutdown(const std::string& reason);

  const PoolSizes& pools() const { return pools_; }
  const ModelFacts& model_facts() const { return facts_; }
  int control_port() const { return bound_port_; }
  std::string failure() const;

 private:
  class Service;
  struct Connection;

  // Called by the service on its threads.
  grpc::Status attach(const control::Hello& hello, grpc::ServerReaderWriter<control::ControlMessage, control::WorkerMessage>* stream,
                      grpc::ServerContext* context, std::shared_ptr<Connection>& out);
  void on_message(Connection& connection, const control::WorkerMessage& message);
  void on_disconnect(Connection& connection);

  void fail(const std::string& message);
  void spawn_local_workers();
  void send_to_all(const control::ControlMessage& message);
  // Waits until pred() holds (under mutex_); throws on failure or timeout.
  void wait_for(std::unique_lock<std::mutex>& lock, const std::function<bool()>& pred, const char* what);

  WorkerGroupOptions options_;
  NodeRanks local_ranks_;  // the ranks this node spawns
  std::function<void(const std::string&)> on_failure_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int bound_port_ = 0;
  PoolSizes pools_;
  ModelFacts facts_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int, std::shared_ptr<Connection>> ranks_;
  std::optional<std::string> failure_;
  bool shutting_down_ = false;
  uint64_t awaited_step_ = 0;
  std::optional<control::StepResult> result_;

  ChildProcesses children_;  // last: destroyed (children terminated and reaped) first
};

}  // namespace ds::server
