// CUDA graphs of whole forward steps. A decode step launches several hundred small kernels; as a
// replayed graph the host enqueues it in one call and the GPU runs it without per-launch gaps.
// A graph holds its kernels' arguments as captured: sizes, which the key must therefore fix, and
// device addresses, whose buffers must stay put while the graph lives (their owner clears the
// graphs before moving one).
#pragma once

#include <cuda_runtime_api.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>

namespace ds::worker {

class StepGraphs {
 public:
  // What fixes a step's launches: its token rows, its logits rows, and the KV length its
  // attention is laid out for.
  struct Key {
    int64_t tokens = 0;
    int64_t logit_rows = 0;
    int64_t kv_len = 0;
    auto operator<=>(const Key&) const = default;
  };

  // Keeps at most `capacity` graphs, dropping the least recently replayed beyond it.
  explicit StepGraphs(size_t capacity) : capacity_(capacity) {}
  ~StepGraphs() { clear(); }
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Launches key's graph on `stream`; false when there is none.
  bool replay(const Key& key, cudaStream_t stream);
  // Records what `enqueue` puts on `stream` (nothing runs) as key's graph. Throws
  // std::runtime_error naming the CUDA error when the work cannot be captured; the stream is then
  // usable again and no graph is kept.
  void capture(const Key& key, cudaStream_t stream, const std::function<void()>& enqueue);
  void clear();
  size_t size() const { return graphs_.size(); }

 private:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
    uint64_t last_use = 0;
  };
  void evict_least_recent();

  size_t capacity_;
  uint64_t uses_ = 0;
  std::map<Key, Entry> graphs_;
};

}  // namespace ds::worker
