// `deltaserve serve`: resolve the model, start and supervise the workers, size the caches from
// their memory reports, then serve HTTP and gRPC until SIGINT/SIGTERM, draining running requests
// for up to --shutdown-timeout before stopping everything (workers included).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <spdlog/spdlog.h>
#include <thread>

#include "server/api/api_context.h"
#include "server/engine/engine.h"
#include "server/engine/request_stream.h"
#include "server/grpc/generation_service.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"
#include "server/serve/model_source.h"
#include "server/serve/serve_options.h"
#include "server/tokenizer/tokenizer.h"
#include "server/workers/worker_group.h"

#ifndef DELTASERVE_VERSION
#define DELTASERVE_VERSION "dev"
#endif

namespace ds::server {

namespace {

constexpr int kCpuMaxKvPages = 2048;     // host memory is shared with everything else
constexpr int kFallbackContextLength = 32768;
// What node 0 does after its drain before its Shutdown reaches other nodes' workers: flushing the
// abort messages (up to 5 s), stopping the APIs (up to 2 s), sending Shutdown.
constexpr double kNodeShutdownMarginSeconds = 15;

// SIGINT/SIGTERM are taken with sigwait by the main thread: block them before any thread starts
// (threads inherit the mask; spawned workers get a clean one).
sigset_t block_termination_signals() {
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Waits for SIGINT/SIGTERM, or until `done` holds (checked every 200 ms).
int wait_for_signal(const sigset_t& set, const std::function<bool()>& done = {}) {
  for (;;) {
    timespec timeout{0, 200'000'000};
    int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig > 0) return sig;
    if (done && done()) return 0;
  }
}

// 1000+ concurrent clients need more descriptors than the usual soft limit of 1024.
void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::string self_executable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

std::pair<std::string, int> split_host_port(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("--dist-init-addr must be HOST:PORT, got '" + address + "'");
  return {address.substr(0, colon), std::stoi(address.substr(colon + 1))};
}

// Nodes other than 0 only run their share of the workers, which attach to node 0's front end.
// Node 0 stops them with Shutdown after draining its requests. A SIGTERM here (`scancel` signals
// every node at once, Kubernetes every pod of the group) therefore waits for that, up to the
// drain time plus a margin, before the workers are killed; a second signal kills them at once.
int run_worker_node(const ServeOptions& o, const sigset_t& signals) {
  if (o.dist_init_addr.empty()) throw std::invalid_argument("--node-rank > 0 needs --dist-init-addr HOST:PORT of node 0");
  NodeRanks ranks = node_ranks(o.tp, o.nnodes, o.node_rank, o.dedicated_frontend);
  auto devices = local_devices(o.device, ranks.count);
  ChildProcesses children;
  for (int i = 0; i < ranks.count; ++i) {
    int rank = ranks.first + i;
    children.spawn({self_executable(), "worker", "--connect", o.dist_init_addr, "--rank", std::to_string(rank), "--device", devices[i],
                    "--exit-with-parent"},
                   [rank](pid_t pid, const std::string& how) { spdlog::info("worker rank {} (pid {}) {}", rank, pid, how); });
  }
  auto all_exited = [&] { return children.num_alive() == 0; };
  if (int sig = wait_for_signal(signals, all_exited); sig > 0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.shutdown_timeout_s + kNodeShutdownMarginSeconds);
    spdlog::info("{}: waiting up to {:.0f} s for node 0 to drain and stop this node's workers", strsignal(sig),
                 o.shutdown_timeout_s + kNodeShutdownMarginSeconds);
    if (wait_for_signal(signals, [&] { return all_exited() || std::chrono::steady_clock::now() > deadline; }) > 0) {
      spdlog::warn("second signal: stopping this node's workers now");
    }
  }
  children.terminate_all(std::chrono::seconds(5));  // workers ignore SIGTERM: SIGKILL after 5 s
  return 0;
}

std::vector<int32_t> eos_ids(const Tokenizer& tokenizer, const ResolvedModel& model) {
  std::vector<int32_t> ids = tokenizer.eos_token_ids();
  auto more = checkpoint_eos_ids(model.model_dir);
  ids.insert(ids.end(), more.begin(), more.end());
  if (auto end_of_text = tokenizer.token_id("<|endoftext|>")) ids.push_back(*end_of_text);  // Qwen's generation_config lists it
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

int serve(const ServeOptions& o) {
  sigset_t signals = block_termination_signals();
  raise_file_limit();
  NodeRanks local_ranks = node_ranks(o.tp, o.nnodes, o.node_rank, o.dedicated_frontend);  // validates the layout
  if (o.node_rank > 0) return run_worker_node(o, signals);

  std::string data_dir;
  try {
    data_dir = find_data_dir(o.data_dir);
  } catch (const std::runtime_error& e) {
    if (o.model_dir.empty() && o.tokenizer_dir.empty()) throw;
  }
  ResolvedModel model = resolve_model(o, data_dir);
  Tokenizer tokenizer = Tokenizer::from_dir(model.tokenizer_dir);
  spdlog::info("tokenizer {} ({} tokens)", model.tokenizer_dir, tokenizer.vocab_size());

  WorkerGroupOptions w;
  w.world_size = o.tp;
  w.nnodes = o.nnodes;
  w.node_rank = 0;
  w.dedicated_frontend = o.dedicated_frontend;
  if (o.nnodes > 1) {
    if (o.dist_init_addr.empty()) throw std::invalid_argument("--nnodes > 1 needs --dist-init-addr HOST:PORT (node 0's control plane)");
    auto [host, port] = split_host_port(o.dist_init_addr);
    w.control_host = "0.0.0.0";
    w.control_port = port;
    // Local workers derive the address their peers reach them at from the route to the front
    // end: it must be the address the other nodes use, not loopback.
    w.connect_host = host;
  }
  w.worker_binary = self_executable();
  if (local_ranks.count > 0) w.local_devices = local_devices(o.device, local_ranks.count);
  w.model_dir = model.model_dir;
  w.preset = model.preset;
  w.load_format = model.load_format;
  w.gdn_projection = o.gdn_projection;
  w.fp8_numerics = o.fp8_numerics;
  w.kv_page_size = o.kv_page_size;
  w.mem_fraction = o.mem_fraction;
  w.seed = o.seed;
  w.max_num_batched_tokens = o.max_num_batched_tokens;
  w.cuda_graph_max_bs = o.cuda_graph_max_bs;
  w.max_running_requests = o.max_running_requests;
  w.max_kv_pages = o.max_kv_pages;
  w.cpu_max_kv_pages = kCpuMaxKvPages;

  std::atomic<Engine*> live_engine{nullptr};
  WorkerGroup workers(w, [&live_engine](const std::string& message) {
    if (Engine* engine = live_engine.load()) engine->mark_failed(message);
  });
  workers.start();

  const PoolSizes& pools = workers.pools();
  const ModelFacts& facts = workers.model_facts();
  ServedModel served;
  served.id = model.served_name;
  served.model_type = facts.model_type;
  served.vocab_size = facts.vocab_size > 0 ? facts.vocab_size : tokenizer.vocab_size();
  served.eos_token_ids = eos_ids(tokenizer, model);
  int context_len = facts.max_context_length > 0 ? facts.max_context_length : kFallbackContextLength;
  if (o.context_length > 0) context_len = std::min(context_len, o.context_length);
  served.max_context_len = static_cast<int>(std::min<int64_t>(context_len, static_cast<int64_t>(pools.num_kv_pages) * o.kv_page_size));

  EngineOptions engine_options;
  SchedulerConfig& sc = engine_options.scheduler;
  sc.max_running_requests = std::min(o.max_running_requests, pools.num_gdn_slots - 1);
  sc.max_num_batched_tokens = o.max_num_batched_tokens;
  sc.kv_page_size = o.kv_page_size;
  sc.num_kv_pages = pools.num_kv_pages;
  sc.num_gdn_slots = pools.num_gdn_slots;
  sc.max_context_len = served.max_context_len;
  sc.eos_token_ids = served.eos_token_ids;
  engine_options.max_waiting_requests = o.max_waiting_requests;
  engine_options.vocab_size = served.vocab_size;

  Metrics metrics;
  Engine engine(engine_options, tokenizer, workers, metrics);
  live_engine = &engine;
  if (auto failure = workers.failure(); !failure.empty()) engine.mark_failed(failure);
  engine.start();

  ServerFacts server_facts{DELTASERVE_VERSION, o.tp, sc.max_running_requests, sc.max_num_batched_tokens, pools.num_kv_pages,
                           o.kv_page_size, pools.num_gdn_slots - 1};
  ApiContext context{engine, tokenizer, metrics, served, server_facts, o.api_key};
  HttpServer http(context, HttpOptions{o.host, o.port, o.http_threads, o.max_body_bytes});
  http.start();
  GrpcServer grpc(context, o.host, o.grpc_port);
  grpc.start();
  spdlog::info("serving '{}' ({}): context {} tokens, {} running requests at most, {} tokens per step", served.id,
               served.model_type.empty() ? "?" : served.model_type, served.max_context_len, sc.max_running_requests,
               sc.max_num_batched_tokens);

  int sig = wait_for_signal(signals);
  spdlog::info("{}: draining {} request(s) for up to {} s", strsignal(sig), engine.num_active(), o.shutdown_timeout_s);
  http.stop_accepting();
  engine.begin_drain();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.shutdown_timeout_s);
  while (engine.num_active() > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  engine.stop("server shutting down");
  // The abort messages just queued still have to reach their clients before the APIs stop.
  auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (RequestStream::live_count() > 0 && std::chrono::steady_clock::now() < flush_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  grpc.stop();
  http.stop();
  live_engine = nullptr;
  workers.shutdown("server shutting down");
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int run_serve(const ServeOptions& options) {
  try {
    return serve(options);
  } catch (const std::exception& e) {
    spdlog::error("serve: {}", e.what());
    return 1;
  }
}

}  // namespace ds::server
