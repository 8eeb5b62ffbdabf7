// Owned memory where a backend computes: host memory (CPU backend) or CUDA device memory.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace ds::worker {

enum class MemoryKind { kHost, kCuda };

class Buffer {
 public:
  Buffer() = default;
  Buffer(MemoryKind kind, size_t bytes);  // zero-filled; throws std::runtime_error when out of memory
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }

 private:
  void release();
  MemoryKind kind_ = MemoryKind::kHost;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Copies between host memory and memory of `kind` (stream-ordered for CUDA; null stream allowed).
void copy_to(MemoryKind kind, void* dst, const void* host_src, size_t bytes, cudaStream_t stream);
void copy_from(MemoryKind kind, void* host_dst, const void* src, size_t bytes, cudaStream_t stream);
// 2-D copy within memory of `kind`: `height` rows of `width` bytes, with row pitches in bytes.
void copy_2d(MemoryKind kind, void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
             size_t height, cudaStream_t stream);
void fill_zero(MemoryKind kind, void* dst, size_t bytes, cudaStream_t stream);
void synchronize(MemoryKind kind, cudaStream_t stream);

// Bytes still free for caches within mem_fraction of the memory of `kind`: for the host, physical
// memory · mem_fraction − already_used (what this process allocated); for CUDA, the device's free
// memory now minus the (1 − mem_fraction) share of its total that is kept in reserve.
uint64_t cache_memory_budget(MemoryKind kind, double mem_fraction, uint64_t already_used);

// Throws std::runtime_error naming `what` when a CUDA runtime call failed.
void check_cuda(int cuda_error, const char* what);

}  // namespace ds::worker
