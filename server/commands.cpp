#include "server/commands.h"

#include <CLI/CLI.hpp>

#include <memory>

#include "server/serve/serve_options.h"

namespace ds::server {

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Serve a model over HTTP (OpenAI API) and gRPC, with N local worker processes");
  auto* model = cmd->add_option("--model", o->model_dir, "Checkpoint folder (config.json, *.safetensors, tokenizer.json)");
  cmd->add_option("--preset", o->preset, "Model preset to build instead of a checkpoint (with --load-format dummy)")->excludes(model);
  cmd->add_option("--load-format", o->load_format, "auto | dummy (random weights)")->check(CLI::IsMember({"auto", "dummy"}))->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer_dir, "Folder with tokenizer.json (default: the model folder, else the Qwen3 tokenizer)");
  cmd->add_option("--served-model-name", o->served_model_name, "The model name clients use (default: the folder or preset name)");
  cmd->add_option("--data-dir", o->data_dir, "Data folder (tokenizer/qwen3, models/); default $DELTASERVE_DATA_DIR or data/ of the build");
  cmd->add_option("--tp", o->tp, "Tensor-parallel size (worker processes, one GPU each)")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--nnodes", o->nnodes, "Nodes the tensor-parallel ranks span")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--node-rank", o->node_rank, "This node (0 runs the front end; others only start their workers)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--dist-init-addr", o->dist_init_addr, "HOST:PORT of node 0's worker control plane (multi-node)");
  cmd->add_flag("--dedicated-frontend", o->dedicated_frontend,
                "Node 0 runs only the front end and nodes 1..nnodes-1 share the --tp ranks evenly "
                "(give it to every node, like --tp and --nnodes)");
  cmd->add_option("--device", o->device, "auto (GPUs when visible, else CPU) | cpu | cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--gdn-projection", o->gdn_projection, "fused | split")->check(CLI::IsMember({"fused", "split"}))->capture_default_str();
  cmd->add_option("--fp8-numerics", o->fp8_numerics,
                  "Block-FP8 checkpoints on GPUs: w8a8 (activations quantized per 128-group, as the checkpoints were "
                  "calibrated and vLLM/SGLang compute) | w8a16 (BF16 activations; slow prefill) | fastest (per shape)")
      ->check(CLI::IsMember({"w8a8", "w8a16", "fastest"}))->capture_default_str();
  cmd->add_option("--kv-page-size", o->kv_page_size, "Tokens per KV-cache page")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--mem-fraction", o->mem_fraction, "Fraction of device memory the workers may use")
      ->check(CLI::Range(0.05, 1.0))->capture_default_str();
  cmd->add_option("--max-kv-pages", o->max_kv_pages, "Cap on KV pages (0: from memory; CPU ranks at most 2048)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of dummy weights")->capture_default_str();
  cmd->add_option("--max-running-requests", o->max_running_requests, "Requests running at once")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", o->max_num_batched_tokens, "Tokens per step (decodes + prefill chunks)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--cuda-graph-max-bs", o->cuda_graph_max_bs,
                  "GPUs: decode steps of up to this many sequences are captured as CUDA graphs and replayed (0: off)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd->add_option("--max-waiting-requests", o->max_waiting_requests, "Queued requests beyond which new ones get 503")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--context-length", o->context_length, "Cap on prompt + generated tokens (0: the model's)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--host", o->host, "Address the HTTP and gRPC APIs listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "HTTP port")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--grpc-port", o->grpc_port, "gRPC port")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--http-threads", o->http_threads, "HTTP I/O threads")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "Largest HTTP request body (413 beyond)")->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' (HTTP) / metadata authorization (gRPC)");
  cmd->add_option("--shutdown-timeout", o->shutdown_timeout_s, "Seconds to let running requests finish on SIGTERM")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->callback([o] {
    int code = run_serve(*o);
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace ds::server
