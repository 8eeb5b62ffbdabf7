#include "worker/cache/gdn_state_pool.h"

#include <stdexcept>
#include <string>

namespace ds::worker {
namespace {

size_t layer_floats_per_slot(const kernels::GdnDims& dims) {
  return static_cast<size_t>(dims.conv_state_floats() + dims.state_floats());
}

}  // namespace

size_t GdnStatePool::slot_bytes(const kernels::GdnDims& dims, int num_layers) {
  return layer_floats_per_slot(dims) * sizeof(float) * num_layers;
}

GdnStatePool::GdnStatePool(MemoryKind kind, const kernels::GdnDims& dims, int num_layers, int num_slots)
    : kind_(kind), dims_(dims), num_layers_(num_layers), num_slots_(num_slots) {
  if (num_layers > 0 && num_slots < 2) {
    throw std::invalid_argument("GDN state pool: " + std::to_string(num_slots) +
                                " slots cannot hold a sequence (slot 0 is scratch; at least 2 needed)");
  }
  storage_ = Buffer(kind, slot_bytes(dims, num_layers) * num_slots);
}

float* GdnStatePool::conv(int index) const {
  if (index < 0 || index >= num_layers_) throw std::out_of_range("GDN state pool: no GDN layer " + std::to_string(index));
  return storage_.as<float>() + static_cast<size_t>(index) * layer_floats_per_slot(dims_) * num_slots_;
}

float* GdnStatePool::recurrent(int index) const {
  return conv(index) + static_cast<size_t>(dims_.conv_state_floats()) * num_slots_;
}

void GdnStatePool::reset_slot(int slot, cudaStream_t stream) {
  if (slot < 0 || slot >= num_slots_) {
    throw std::out_of_range("GDN state pool: slot " + std::to_string(slot) + " outside [0, " +
                            std::to_string(num_slots_) + ")");
  }
  for (int layer = 0; layer < num_layers_; ++layer) {
    fill_zero(kind_, conv(layer) + slot * dims_.conv_state_floats(), dims_.conv_state_floats() * sizeof(float), stream);
    fill_zero(kind_, recurrent(layer) + slot * dims_.state_floats(), dims_.state_floats() * sizeof(float), stream);
  }
}

}  // namespace ds::worker
