#include "weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

namespace ds::weights {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& file_name, const std::string& message) {
  throw std::runtime_error(file_name + ": " + message);
}

[[noreturn]] void fail_tensor(const std::string& file_name, const std::string& tensor, const std::string& message) {
  throw std::runtime_error(file_name + ": tensor \"" + tensor + "\": " + message);
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(p[i]);
  return value;
}

uint64_t json_unsigned(const json& value, const std::string& file_name, const std::string& tensor,
                       const std::string& field) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
  fail_tensor(file_name, tensor, field + " must hold non-negative integers, got " + value.dump());
}

// Parses one tensor entry; its bytes are filled in after the offsets are checked.
struct RawEntry {
  TensorView view;
  uint64_t begin = 0, end = 0;
};

RawEntry parse_entry(const std::string& name, const json& entry, const std::string& file_name) {
  if (!entry.is_object()) fail_tensor(file_name, name, "entry is not a JSON object");
  RawEntry raw;
  raw.view.name = name;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) fail_tensor(file_name, name, "missing string field \"dtype\"");
  auto dtype = try_parse_dtype(dtype_it->get_ref<const std::string&>());
  if (!dtype) fail_tensor(file_name, name, "unknown dtype \"" + dtype_it->get<std::string>() + "\"");
  raw.view.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) fail_tensor(file_name, name, "missing array field \"shape\"");
  uint64_t numel = 1;
  for (const auto& dim : *shape_it) {
    uint64_t d = json_unsigned(dim, file_name, name, "shape");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d)) {
      fail_tensor(file_name, name, "shape " + shape_it->dump() + " overflows");
    }
    numel *= d;
    raw.view.shape.push_back(static_cast<int64_t>(d));
  }
  const uint64_t element_size = dtype_size(raw.view.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / element_size) {
    fail_tensor(file_name, name, "shape " + shape_it->dump() + " overflows");
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    fail_tensor(file_name, name, "\"data_offsets\" must be an array [begin, end]");
  }
  raw.begin = json_unsigned((*offsets_it)[0], file_name, name, "data_offsets");
  raw.end = json_unsigned((*offsets_it)[1], file_name, name, "data_offsets");
  if (raw.end < raw.begin) {
    fail_tensor(file_name, name, "data_offsets " + offsets_it->dump() + " end before begin");
  }
  if (raw.end - raw.begin != numel * element_size) {
    fail_tensor(file_name, name,
                "byte size " + std::to_string(raw.end - raw.begin) + " != shape " + shape_it->dump() + " x " +
                    std::to_string(element_size) + " bytes (" + std::string(dtype_name(raw.view.dtype)) + ") = " +
                    std::to_string(numel * element_size));
  }
  return raw;
}

std::map<std::string, std::string> parse_metadata(const json& metadata, const std::string& file_name) {
  if (!metadata.is_object()) fail(file_name, "\"__metadata__\" is not a JSON object");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string()) fail(file_name, "\"__metadata__\" value of \"" + key + "\" is not a string");
    out[key] = value.get<std::string>();
  }
  return out;
}

// The byte ranges must tile [0, data_size) exactly: sorted by offset, each begins where the
// previous ended.
void check_tiling(std::vector<RawEntry>& entries, uint64_t data_size, const std::string& file_name) {
  std::sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const auto& entry : entries) {
    if (entry.begin > expected) {
      fail_tensor(file_name, entry.view.name,
                  "gap: data starts at " + std::to_string(entry.begin) + " but " +
                      (previous ? "tensor \"" + *previous + "\" ends" : std::string("the data begins")) + " at " +
                      std::to_string(expected));
    }
    if (entry.begin < expected) {
      fail_tensor(file_name, entry.view.name,
                  "overlaps tensor \"" + (previous ? *previous : std::string()) + "\" (starts at " +
                      std::to_string(entry.begin) + ", which ends at " + std::to_string(expected) + ")");
    }
    if (entry.end > data_size) {
      fail_tensor(file_name, entry.view.name,
                  "data_offsets end " + std::to_string(entry.end) + " is past the end of the data (" +
                      std::to_string(data_size) + " bytes)");
    }
    expected = entry.end;
    previous = &entry.view.name;
  }
  if (expected != data_size) {
    fail(file_name, "the tensors cover " + std::to_string(expected) + " of " + std::to_string(data_size) +
                        " data bytes (trailing bytes are not allowed)");
  }
}

std::string header_json(const std::vector<TensorLayout>& tensors, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      throw std::invalid_argument("write_safetensors: duplicate or reserved tensor name \"" + t.name + "\"");
    }
    uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) throw std::invalid_argument("write_safetensors: tensor \"" + t.name + "\" has a negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t bytes = numel * dtype_size(t.dtype);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

size_t tensor_bytes(const TensorLayout& t) {
  size_t numel = 1;
  for (auto d : t.shape) numel *= static_cast<size_t>(d);
  return numel * dtype_size(t.dtype);
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors(std::span<const std::byte> file_bytes, const std::string& file_name) {
  if (file_bytes.size() < 8) {
    fail(file_name, "truncated: " + std::to_string(file_bytes.size()) + " bytes, a safetensors file needs at least 8");
  }
  const uint64_t header_size = read_u64_le(file_bytes.data());
  if (header_size > kMaxSafetensorsHeaderBytes) {
    fail(file_name, "header length " + std::to_string(header_size) + " exceeds the " +
                        std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  }
  if (header_size > file_bytes.size() - 8) {
    fail(file_name, "header length " + std::to_string(header_size) + " runs past the end of the file (" +
                        std::to_string(file_bytes.size()) + " bytes)");
  }
  const auto* header_begin = reinterpret_cast<const char*>(file_bytes.data() + 8);
  json header = json::parse(header_begin, header_begin + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(file_name, "header is not valid JSON");
  if (!header.is_object()) fail(file_name, "header is not a JSON object");

  SafetensorsHeader out;
  std::vector<RawEntry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      out.metadata = parse_metadata(entry, file_name);
    } else {
      entries.push_back(parse_entry(name, entry, file_name));
    }
  }
  const uint64_t data_size = file_bytes.size() - 8 - header_size;
  check_tiling(entries, data_size, file_name);
  const std::byte* data = file_bytes.data() + 8 + header_size;
  out.tensors.reserve(entries.size());
  for (auto& entry : entries) {
    entry.view.bytes = std::span<const std::byte>(data + entry.begin, entry.end - entry.begin);
    out.tensors.push_back(std::move(entry.view));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw std::runtime_error(path + ": cannot stat: " + std::strerror(errno));
    map_size_ = static_cast<size_t>(st.st_size);
    if (map_size_ > 0) {
      void* map = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (map == MAP_FAILED) throw std::runtime_error(path + ": cannot mmap: " + std::strerror(errno));
      map_ = static_cast<const std::byte*>(map);
    }
    header_ = parse_safetensors(std::span<const std::byte>(map_, map_size_), path);
  } catch (...) {
    close_all();
    throw;
  }
}

void SafetensorsFile::close_all() noexcept {
  if (map_) ::munmap(const_cast<std::byte*>(map_), map_size_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  map_size_ = 0;
  fd_ = -1;
}

SafetensorsFile::~SafetensorsFile() { close_all(); }

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      fd_(std::exchange(other.fd_, -1)),
      header_(std::move(other.header_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    close_all();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    fd_ = std::exchange(other.fd_, -1);
    header_ = std::move(other.header_);
  }
  return *this;
}

void SafetensorsFile::release_pages(std::span<const std::byte> bytes) const {
  if (!map_ || bytes.empty()) return;
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // Only whole pages inside the range: a neighbour tensor may still be in use.
  const auto begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(bytes.data() + bytes.size())) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void SafetensorsFile::read(std::span<const std::byte> bytes, void* dst) const {
  if (!holds(bytes)) throw std::logic_error(path_ + ": read of a range outside the file");
  const auto offset = static_cast<off_t>(bytes.data() - map_);
  auto read_range = [this, offset](size_t begin, size_t end, std::byte* out) {
    while (begin < end) {
      const ssize_t n = ::pread(fd_, out + begin, end - begin, offset + static_cast<off_t>(begin));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(path_ + ": read failed: " + (n < 0 ? std::strerror(errno) : "unexpected end of file"));
      begin += static_cast<size_t>(n);
    }
  };
  auto* out = static_cast<std::byte*>(dst);
  constexpr size_t kChunk = 32u << 20;
  const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 16);
  if (bytes.size() < 2 * kChunk || threads == 1) {
    read_range(0, bytes.size(), out);
    return;
  }
  // Large tensors: a few threads each pread a contiguous share (page-cache copies scale with cores).
  const size_t parts = std::min(threads, bytes.size() / kChunk);
  const size_t share = (bytes.size() + parts - 1) / parts;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(parts);
  for (size_t p = 0; p < parts; ++p) {
    workers.emplace_back([&, p] {
      try {
        read_range(p * share, std::min(bytes.size(), (p + 1) * share), out);
      } catch (...) {
        errors[p] = std::current_exception();
      }
    });
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

bool SafetensorsFile::holds(std::span<const std::byte> bytes) const {
  const auto begin = reinterpret_cast<uintptr_t>(map_);
  const auto address = reinterpret_cast<uintptr_t>(bytes.data());
  return map_ && address >= begin && address + bytes.size() <= begin + map_size_;
}

void write_safetensors_streamed(const std::string& path, const std::vector<TensorLayout>& tensors, const TensorFill& fill,
                                const std::map<std::string, std::string>& metadata) {
  const std::string header = header_json(tensors, metadata);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  uint64_t header_size = header.size();
  std::byte size_bytes[8];
  for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<std::byte>((header_size >> (8 * i)) & 0xff);
  out.write(reinterpret_cast<const char*>(size_bytes), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  std::vector<std::byte> buffer;
  for (size_t i = 0; i < tensors.size(); ++i) {
    buffer.resize(tensor_bytes(tensors[i]));
    fill(i, std::span<std::byte>(buffer));
    out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
  }
  out.close();
  if (!out) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorLayout> layouts;
  for (const auto& t : tensors) {
    layouts.push_back({t.name, t.dtype, t.shape});
    if (tensor_bytes(layouts.back()) != t.data.size()) {
      throw std::invalid_argument("write_safetensors: tensor \"" + t.name + "\" has " + std::to_string(t.data.size()) +
                                  " bytes, its shape needs " + std::to_string(tensor_bytes(layouts.back())));
    }
  }
  write_safetensors_streamed(
      path, layouts, [&](size_t i, std::span<std::byte> bytes) {
        if (!bytes.empty()) std::memcpy(bytes.data(), tensors[i].data.data(), bytes.size());
      },
      metadata);
}

}  // namespace ds::weights
