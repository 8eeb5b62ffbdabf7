#include "server/scheduler/page_allocator.h"

#include <stdexcept>
#include <string>

namespace ds::server {

IdAllocator::IdAllocator(int32_t first_id, int32_t count) : first_id_(first_id), capacity_(count) {
  if (count < 0) throw std::invalid_argument("IdAllocator: negative count " + std::to_string(count));
  free_.reserve(count);
  for (int32_t i = count - 1; i >= 0; --i) free_.push_back(first_id + i);  // lowest id handed out first
  is_free_.assign(count, true);
}

int32_t IdAllocator::allocate() {
  if (free_.empty()) throw std::logic_error("IdAllocator: allocate() with nothing free");
  int32_t id = free_.back();
  free_.pop_back();
  is_free_[id - first_id_] = false;
  return id;
}

void IdAllocator::release(int32_t id) {
  if (id < first_id_ || id >= first_id_ + capacity_) {
    throw std::logic_error("IdAllocator: release of id " + std::to_string(id) + " outside its range");
  }
  if (is_free_[id - first_id_]) throw std::logic_error("IdAllocator: double release of id " + std::to_string(id));
  is_free_[id - first_id_] = true;
  free_.push_back(id);
}

KvPageAllocator::KvPageAllocator(int32_t num_pages, int32_t page_size) : IdAllocator(0, num_pages), page_size_(page_size) {
  if (page_size <= 0) throw std::invalid_argument("KvPageAllocator: page size must be positive");
}

GdnSlotAllocator::GdnSlotAllocator(int32_t num_slots) : IdAllocator(1, num_slots > 0 ? num_slots - 1 : 0) {
  if (num_slots < 2) throw std::invalid_argument("GdnSlotAllocator: need at least 2 slots (slot 0 is scratch)");
}

}  // namespace ds::server
