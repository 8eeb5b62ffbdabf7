// safetensors files: a validating mmap reader and a writer.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the data; the tensors' byte ranges tile the data exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "weights/dtype.h"

namespace ds::weights {

// A tensor inside a mapped file (or a byte buffer); valid while its owner lives.
struct TensorView {
  std::string name;  // as stored in the file
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorView> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
};

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;  // as the reference implementation

// Parses and validates a whole file image. Every violation throws std::runtime_error naming
// `file_name` and, where there is one, the tensor: too short, header length past the end or over
// the cap, invalid JSON, a non-object entry, unknown dtype, bad shape, offsets out of range,
// overlapping, gapped or not tiling the data, byte size != product(shape) * dtype size.
SafetensorsHeader parse_safetensors(std::span<const std::byte> file_bytes, const std::string& file_name);

// A read-only mapped safetensors file, validated on open.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // Drops the mapped pages of `bytes` from this process (the page cache keeps them), so that
  // resident memory stays near one tensor while a checkpoint streams through.
  void release_pages(std::span<const std::byte> bytes) const;
  bool holds(std::span<const std::byte> bytes) const;  // whether `bytes` lies in this file's mapping
  // Copies `bytes` (a range of this file's mapping) into `dst` with pread, in parallel chunks when
  // large: no page faults and no resident mapping, so large copies run at page-cache speed.
  void read(std::span<const std::byte> bytes, void* dst) const;

 private:
  void close_all() noexcept;

  std::string path_;
  const std::byte* map_ = nullptr;
  size_t map_size_ = 0;
  int fd_ = -1;
  SafetensorsHeader header_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // product(shape) * dtype_size bytes
};

// Writes a safetensors file (tensors in the given order; header padded to 8 bytes with spaces).
// Throws naming the tensor on a size mismatch or a duplicate name.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The same, producing one tensor at a time: fill(index, bytes) writes tensor `index` into a
// buffer of its size, so that memory stays at the largest tensor (multi-GB checkpoints).
struct TensorLayout {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
};
using TensorFill = std::function<void(size_t index, std::span<std::byte> bytes)>;
void write_safetensors_streamed(const std::string& path, const std::vector<TensorLayout>& tensors, const TensorFill& fill,
                                const std::map<std::string, std::string>& metadata = {});

}  // namespace ds::weights
