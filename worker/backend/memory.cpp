#include "worker/backend/memory.h"

#include <cuda_runtime_api.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace ds::worker {

void check_cuda(int cuda_error, const char* what) {
  if (cuda_error != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(static_cast<cudaError_t>(cuda_error)));
  }
}

Buffer::Buffer(MemoryKind kind, size_t bytes) : kind_(kind), bytes_(bytes) {
  if (bytes == 0) return;
  if (kind == MemoryKind::kHost) {
    // 64-byte alignment keeps BLAS and vector loops on whole cache lines.
    data_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (data_ == nullptr) throw std::runtime_error("host allocation of " + std::to_string(bytes) + " bytes failed");
    std::memset(data_, 0, bytes);
  } else {
    check_cuda(cudaMalloc(&data_, bytes), ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
    check_cuda(cudaMemset(data_, 0, bytes), "cudaMemset");
    // The zero fill runs on the legacy default stream, which does not order with the backend's
    // non-blocking stream: without this wait, a buffer grown mid-run (step metadata, sampling
    // parameters, logits) could be zeroed after that stream's first copy into it had landed.
    check_cuda(cudaDeviceSynchronize(), "cudaMemset (wait)");
  }
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& other) noexcept
    : kind_(other.kind_), data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    kind_ = other.kind_;
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (data_ == nullptr) return;
  if (kind_ == MemoryKind::kHost) {
    std::free(data_);
  } else {
    cudaFree(data_);  // errors at teardown cannot be acted on
  }
  data_ = nullptr;
}

void copy_to(MemoryKind kind, void* dst, const void* host_src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  if (kind == MemoryKind::kHost) {
    std::memcpy(dst, host_src, bytes);
  } else {
    check_cuda(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync to device");
  }
}

void copy_from(MemoryKind kind, void* host_dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  if (kind == MemoryKind::kHost) {
    std::memcpy(host_dst, src, bytes);
  } else {
    check_cuda(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync to host");
  }
}

void copy_2d(MemoryKind kind, void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
             size_t height, cudaStream_t stream) {
  if (width == 0 || height == 0) return;
  if (kind == MemoryKind::kHost) {
    for (size_t row = 0; row < height; ++row) {
      std::memmove(static_cast<std::byte*>(dst) + row * dst_pitch, static_cast<const std::byte*>(src) + row * src_pitch,
                   width);
    }
  } else {
    check_cuda(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, cudaMemcpyDeviceToDevice, stream),
               "cudaMemcpy2DAsync");
  }
}

void fill_zero(MemoryKind kind, void* dst, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  if (kind == MemoryKind::kHost) {
    std::memset(dst, 0, bytes);
  } else {
    check_cuda(cudaMemsetAsync(dst, 0, bytes, stream), "cudaMemsetAsync");
  }
}

void synchronize(MemoryKind kind, cudaStream_t stream) {
  if (kind == MemoryKind::kCuda) check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

uint64_t cache_memory_budget(MemoryKind kind, double mem_fraction, uint64_t already_used) {
  if (mem_fraction <= 0 || mem_fraction > 1) {
    throw std::invalid_argument("mem_fraction " + std::to_string(mem_fraction) + " outside (0, 1]");
  }
  if (kind == MemoryKind::kHost) {
    const double total = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    const double budget = total * mem_fraction - static_cast<double>(already_used);
    return budget > 0 ? static_cast<uint64_t>(budget) : 0;
  }
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const double budget = static_cast<double>(free_bytes) - static_cast<double>(total_bytes) * (1 - mem_fraction);
  return budget > 0 ? static_cast<uint64_t>(budget) : 0;
}

}  // namespace ds::worker
