#include "worker/backend/step_graphs.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace ds::worker {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("step graph: ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

bool StepGraphs::replay(const Key& key, cudaStream_t stream) {
  const auto it = graphs_.find(key);
  if (it == graphs_.end()) return false;
  it->second.last_use = ++uses_;
  check(cudaGraphLaunch(it->second.exec, stream), "cudaGraphLaunch");
  return true;
}

void StepGraphs::capture(const Key& key, cudaStream_t stream, const std::function<void()>& enqueue) {
  // Thread-local: other host threads' CUDA calls neither join the capture nor invalidate it.
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);  // ends the capture so the stream runs work again
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // a failed capture leaves its error behind for the next launch check
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = ended == cudaSuccess ? cudaGraphInstantiate(&exec, graph, 0) : ended;
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) cudaGetLastError();  // as above: the stream's next work must not see it
  check(ended, "cudaStreamEndCapture");
  check(instantiated, "cudaGraphInstantiate");
  if (const auto old = graphs_.find(key); old != graphs_.end()) {
    cudaGraphExecDestroy(old->second.exec);
    graphs_.erase(old);
  }
  if (graphs_.size() >= capacity_) evict_least_recent();
  graphs_[key] = Entry{exec, ++uses_};
}

void StepGraphs::evict_least_recent() {
  const auto oldest = std::min_element(graphs_.begin(), graphs_.end(), [](const auto& a, const auto& b) {
    return a.second.last_use < b.second.last_use;
  });
  if (oldest == graphs_.end()) return;
  cudaGraphExecDestroy(oldest->second.exec);
  graphs_.erase(oldest);
}

void StepGraphs::clear() {
  for (auto& [key, entry] : graphs_) cudaGraphExecDestroy(entry.exec);
  graphs_.clear();
}

}  // namespace ds::worker
