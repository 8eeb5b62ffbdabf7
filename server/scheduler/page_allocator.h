// Free-list allocators for the two caches the front end places: KV pages (full-attention layers)
// and GDN state slots (one per running sequence; slot 0 is the workers' scratch slot, never given).
#pragma once

#include <cstdint>
#include <vector>

namespace ds::server {

// Hands out ids in [first_id, first_id + count). LIFO reuse keeps recently freed (warm) ids in use.
class IdAllocator {
 public:
  IdAllocator(int32_t first_id, int32_t count);
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t capacity() const { return capacity_; }
  // Throws std::logic_error when empty: callers check num_free() first.
  int32_t allocate();
  // Throws std::logic_error for an id outside the range or already free (a double free).
  void release(int32_t id);

 private:
  int32_t first_id_;
  int32_t capacity_;
  std::vector<int32_t> free_;
  std::vector<bool> is_free_;
};

// KV pages 0..num_pages-1.
class KvPageAllocator : public IdAllocator {
 public:
  KvPageAllocator(int32_t num_pages, int32_t page_size);
  int32_t page_size() const { return page_size_; }
  int32_t pages_for(int64_t num_tokens) const {
    return static_cast<int32_t>((num_tokens + page_size_ - 1) / page_size_);
  }

 private:
  int32_t page_size_;
};

// GDN slots 1..num_slots-1 (num_slots counts the scratch slot 0, as AllocatePools does).
class GdnSlotAllocator : public IdAllocator {
 public:
  explicit GdnSlotAllocator(int32_t num_slots);
};

}  // namespace ds::server
