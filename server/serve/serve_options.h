// Everything `deltaserve serve` is told on its command line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ds::server {

struct ServeOptions {
  // What to serve. None of the three: the embedded default (preset tiny, random weights written
  // once in the real checkpoint format, the Qwen3 tokenizer).
  std::string model_dir;
  std::string preset;
  std::string load_format = "auto";  // "auto" | "dummy"
  std::string tokenizer_dir;         // default: the model folder, else data/tokenizer/qwen3
  std::string served_model_name;     // default: the model folder's name or the preset
  std::string data_dir;              // default: $DELTASERVE_DATA_DIR, else data/ next to the build

  // Workers.
  int tp = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string dist_init_addr;  // HOST:PORT of node 0's worker control plane (multi-node)
  bool dedicated_frontend = false;  // node 0 runs only the front end; nodes 1.. host all --tp ranks
  std::string device = "auto";  // auto | cpu | cuda
  std::string gdn_projection = "fused";
  std::string fp8_numerics = "w8a8";  // w8a8 | w8a16 | fastest (kernels/gemm.h Fp8Numerics)
  int kv_page_size = 64;
  double mem_fraction = 0.9;
  int max_kv_pages = 0;  // 0: from memory (CPU ranks: at most 2048)
  uint64_t seed = 0;

  // Scheduling.
  int max_running_requests = 256;
  int max_num_batched_tokens = 8192;
  int cuda_graph_max_bs = 64;  // decode steps of up to this many sequences replay CUDA graphs (0: off)
  int max_waiting_requests = 4096;
  int context_length = 0;  // 0: the model's

  // Front doors.
  std::string host = "127.0.0.1";
  int port = 8000;
  int grpc_port = 50051;
  int http_threads = 4;
  size_t max_body_bytes = 8 << 20;
  std::string api_key;
  double shutdown_timeout_s = 30;
};

// Runs the server until SIGINT/SIGTERM; returns the process exit code.
int run_serve(const ServeOptions& options);

}  // namespace ds::server
