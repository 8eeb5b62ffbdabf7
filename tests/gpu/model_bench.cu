// Real-size run of the CUDA model: the qwen3.5-9b preset (or another, e.g. qwen3.5-9b-fp8) with
// dummy weights on one GPU.
// Prints load time, memory (weights, free for caches, bytes per KV page and GDN slot), the time
// of one 8k-token prefill, and decode step times at batch 1 (8k context) and batch 64.
//   model_bench [preset=qwen3.5-9b] [projection=fused] [cuda_graph_max_bs=64]
// (decode steps replay CUDA graphs unless cuda_graph_max_bs is 0; the two warm-up steps capture them)
// Times are wall-clock around ModelRunner::step(), which includes the host copy of the sampled
// rows' fp32 logits and host sampling (the worker's real cost today).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "weights/model_config.h"
#include "worker/model_runner.h"

namespace {

using Clock = std::chrono::steady_clock;
using ds::worker::SequenceStep;

constexpr int kPageSize = 64;
constexpr int kLongPrompt = 8192;
constexpr int kShortPrompt = 512;
constexpr int kBatch = 64;
constexpr int kDecodeSteps = 20;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Sequence {
  SequenceStep step;
  int32_t last_token = 0;
};

Sequence make_sequence(int index, int prompt_len, int max_len, int first_page, int vocab) {
  Sequence seq;
  seq.step.seq_id = static_cast<uint64_t>(index);
  seq.step.gdn_slot = 1 + index;
  seq.step.reset_slot = true;
  seq.step.start_pos = 0;
  for (int t = 0; t < prompt_len; ++t) seq.step.tokens.push_back(static_cast<int32_t>((t * 7919 + index) % vocab));
  for (int p = 0; p < (max_len + kPageSize - 1) / kPageSize; ++p) seq.step.page_table.push_back(first_page + p);
  seq.step.sample = true;
  return seq;
}

// Turns a sequence that just ran into its next decode step.
void to_decode(Sequence& seq, int32_t token) {
  seq.step.start_pos += static_cast<int>(seq.step.tokens.size());
  seq.step.tokens = {token};
  seq.step.reset_slot = false;
  ++seq.step.sample_index;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs kDecodeSteps decode steps over `seqs` after two warm-up steps; returns the median seconds
// and sets `first` to the first step's (GEMM autotune for new shapes, then the graph capture).
double time_decode(ds::worker::ModelRunner& runner, std::vector<Sequence>& seqs, double& first) {
  std::vector<double> times;
  for (int i = 0; i < kDecodeSteps + 2; ++i) {
    std::vector<SequenceStep> batch;
    for (const Sequence& s : seqs) batch.push_back(s.step);
    const auto start = Clock::now();
    const auto sampled = runner.step(batch);
    if (i == 0) first = seconds_since(start);
    if (i >= 2) times.push_back(seconds_since(start));
    for (size_t s = 0; s < seqs.size(); ++s) to_decode(seqs[s], sampled[s].token_id);
  }
  return median(times);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a log even if a later step aborts
  const std::string preset = argc > 1 ? argv[1] : "qwen3.5-9b";
  const std::string projection = argc > 2 ? argv[2] : "fused";
  const int graph_max_bs = argc > 3 ? std::atoi(argv[3]) : 64;
  const auto devices = ds::kernels::list_cuda_devices();
  if (devices.empty()) {
    std::printf("SKIPPED: no GPU\n");
    return 77;
  }
  std::printf("device: %s, %.1f GiB\n", devices[0].name.c_str(), devices[0].total_bytes / double(1 << 30));

  ds::worker::RunnerOptions options;
  options.preset = preset;
  options.dummy_weights = true;
  options.device = "cuda:0";
  options.gdn_projection = projection;
  options.kv_page_size = kPageSize;
  options.max_num_batched_tokens = kLongPrompt;
  options.cuda_graph_max_bs = graph_max_bs;
  auto start = Clock::now();
  auto runner = ds::worker::ModelRunner::create(options);
  std::printf("%s (%s projection): load (dummy weights) %.1f s\n", preset.c_str(), projection.c_str(),
              seconds_since(start));
  const ds::worker::MemoryReport mem = runner->memory_report();
  std::printf("memory: weights %.2f GiB, free for caches %.2f GiB, KV page (%d tokens) %.1f KiB, GDN slot %.2f MiB\n",
              mem.weight_bytes / double(1 << 30), mem.free_bytes / double(1 << 30), kPageSize,
              mem.kv_page_bytes / 1024.0, mem.gdn_slot_bytes / double(1 << 20));

  const int vocab = runner->vocab_size();
  const int long_pages = (kLongPrompt + 256 + kPageSize - 1) / kPageSize;
  const int short_pages = (kShortPrompt + 256 + kPageSize - 1) / kPageSize;
  const int warm_pages = 1024 / kPageSize;
  const int num_pages = long_pages + kBatch * short_pages + warm_pages;
  const int num_slots = kBatch + 2;
  runner->allocate_pools(num_pages, num_slots);
  std::printf("pools: %d KV pages (%.2f GiB), %d GDN slots (%.2f GiB)\n", num_pages,
              double(num_pages) * mem.kv_page_bytes / double(1 << 30), num_slots,
              double(num_slots) * mem.gdn_slot_bytes / double(1 << 30));
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  std::printf("device memory in use after pools: %.2f GiB of %.2f GiB\n", (total_bytes - free_bytes) / double(1 << 30),
              total_bytes / double(1 << 30));

  // Warm-up prefill (GEMM plans, kernels), then the timed 8k prefill on a fresh slot.
  {
    const Sequence warm = make_sequence(kBatch, 1024, 1024, long_pages + kBatch * short_pages, vocab);
    runner->step({warm.step});
  }
  Sequence long_seq = make_sequence(0, kLongPrompt, kLongPrompt + 256, 0, vocab);
  start = Clock::now();
  auto sampled = runner->step({long_seq.step});
  const double prefill_s = seconds_since(start);
  std::printf("prefill %d tokens: %.1f ms (%.0f tokens/s)\n", kLongPrompt, prefill_s * 1e3, kLongPrompt / prefill_s);
  to_decode(long_seq, sampled[0].token_id);
  std::vector<Sequence> one{long_seq};
  double first = 0;
  const double decode1 = time_decode(*runner, one, first);
  std::printf("decode batch 1 (context %d): %.2f ms/step (first step %.1f ms)\n", kLongPrompt, decode1 * 1e3,
              first * 1e3);

  // Batch 64: short prompts prefilled 16 at a time (8192 tokens per step), then decodes.
  std::vector<Sequence> batch;
  for (int i = 0; i < kBatch; ++i) batch.push_back(make_sequence(1 + i, kShortPrompt, kShortPrompt + 256,
                                                                 long_pages + i * short_pages, vocab));
  for (int i = 0; i < kBatch; ++i) batch[i].step.gdn_slot = 2 + i;
  const int per_step = kLongPrompt / kShortPrompt;
  for (int first = 0; first < kBatch; first += per_step) {
    std::vector<SequenceStep> steps;
    for (int i = first; i < std::min(kBatch, first + per_step); ++i) steps.push_back(batch[i].step);
    start = Clock::now();
    sampled = runner->step(steps);
    std::printf("prefill %zu x %d tokens: %.1f ms\n", steps.size(), kShortPrompt, seconds_since(start) * 1e3);
    for (size_t i = 0; i < steps.size(); ++i) to_decode(batch[first + i], sampled[i].token_id);
  }
  const double decode64 = time_decode(*runner, batch, first);
  std::printf("decode batch %d (context %d): %.2f ms/step (%.0f tokens/s; first step %.1f ms)\n", kBatch, kShortPrompt,
              decode64 * 1e3, kBatch / decode64, first * 1e3);
  std::printf("CUDA graphs (cuda_graph_max_bs %d): %zu held\n", graph_max_bs, runner->cuda_graphs());
  return 0;
}
