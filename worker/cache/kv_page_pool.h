// Paged K/V cache of the full-attention layers (GDN layers keep no KV). Every full-attention layer
// has its own K and V pools of [num_pages][num_kv_heads][page_size][head_dim] elements (the layout
// of kernels/attention.h); a page id addresses the same page in every layer, so one page table serves the whole model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/backend/memory.h"

namespace ds::worker {

struct KvPageGeometry {
  int num_layers = 0;     // full-attention layers on this rank
  int page_size = 0;      // tokens per page
  int num_kv_heads = 0;   // Hkv_r
  int head_dim = 0;       // D
  size_t element_bytes = 0;  // 4 (fp32, CPU) or 2 (bf16, CUDA)

  size_t layer_page_bytes() const;  // K or V of one page in one layer
  size_t page_bytes() const;        // K and V of one page in every layer (MemoryReport::kv_page_bytes)
};

class KvPagePool {
 public:
  KvPagePool(MemoryKind kind, const KvPageGeometry& geometry, int num_pages);

  const KvPageGeometry& geometry() const { return geometry_; }
  int num_pages() const { return num_pages_; }
  // Base of the K / V pool of the `index`-th full-attention layer (in layer order).
  void* k(int index) const;
  void* v(int index) const;

 private:
  KvPageGeometry geometry_;
  int num_pages_;
  Buffer storage_;  // [layer][K or V][page][head][token][dim]
};

}  // namespace ds::worker
