// Per-sequence state of the Gated DeltaNet layers: for every GDN layer, a conv state pool
// [num_slots][C_r][kernel-1] and a recurrent state pool [num_slots][Hv_r][dv][dk], both fp32.
// A slot belongs to one running sequence; slot 0 is scratch (never handed to a sequence).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/gdn_types.h"
#include "worker/backend/memory.h"

namespace ds::worker {

class GdnStatePool {
 public:
  GdnStatePool(MemoryKind kind, const kernels::GdnDims& dims, int num_layers, int num_slots);

  // Bytes of one slot over every GDN layer (MemoryReport::gdn_slot_bytes).
  static size_t slot_bytes(const kernels::GdnDims& dims, int num_layers);

  int num_slots() const { return num_slots_; }
  // Pool bases of the `index`-th GDN layer (in layer order); slot s starts s slots further.
  float* conv(int index) const;
  float* recurrent(int index) const;
  // Zeroes `slot` in every layer (a new sequence starts from zero state).
  void reset_slot(int slot, cudaStream_t stream);

 private:
  MemoryKind kind_;
  kernels::GdnDims dims_;
  int num_layers_;
  int num_slots_;
  Buffer storage_;  // [layer][conv pool | recurrent pool]
};

}  // namespace ds::worker
