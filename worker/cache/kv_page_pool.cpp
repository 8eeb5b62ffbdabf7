#include "worker/cache/kv_page_pool.h"

#include <stdexcept>
#include <string>

namespace ds::worker {

size_t KvPageGeometry::layer_page_bytes() const {
  return static_cast<size_t>(page_size) * num_kv_heads * head_dim * element_bytes;
}

size_t KvPageGeometry::page_bytes() const { return 2 * layer_page_bytes() * num_layers; }

KvPagePool::KvPagePool(MemoryKind kind, const KvPageGeometry& geometry, int num_pages)
    : geometry_(geometry), num_pages_(num_pages) {
  if (num_pages < 0) throw std::invalid_argument("KV page pool: negative page count " + std::to_string(num_pages));
  if (geometry.num_layers > 0 && num_pages == 0) {
    throw std::invalid_argument("KV page pool: the model has full-attention layers but no KV pages were given");
  }
  storage_ = Buffer(kind, geometry.page_bytes() * num_pages);
}

void* KvPagePool::k(int index) const {
  if (index < 0 || index >= geometry_.num_layers) {
    throw std::out_of_range("KV page pool: no full-attention layer " + std::to_string(index));
  }
  return storage_.as<std::byte>() + 2 * static_cast<size_t>(index) * geometry_.layer_page_bytes() * num_pages_;
}

void* KvPagePool::v(int index) const {
  return static_cast<std::byte*>(k(index)) + geometry_.layer_page_bytes() * num_pages_;
}

}  // namespace ds::worker
