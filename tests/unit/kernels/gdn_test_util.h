// Helpers for the GDN kernel unit tests: seeded random inputs and packed batches.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/gdn_types.h"
#include "tests/unit/kernels/random_data.h"

namespace ds::kernels::test {

// Host-side storage of a variable-length batch; view() gives the GdnVarlenBatch.
struct HostBatch {
  std::vector<int32_t> cu_seqlens{0};
  std::vector<int32_t> slots;
  std::vector<uint8_t> has_initial_state;

  void add(int32_t len, int32_t slot, bool from_state) {
    cu_seqlens.push_back(cu_seqlens.back() + len);
    slots.push_back(slot);
    has_initial_state.push_back(from_state ? 1 : 0);
  }
  int64_t num_tokens() const { return cu_seqlens.back(); }
  int64_t num_seqs() const { return int64_t(slots.size()); }
  GdnVarlenBatch view() const {
    return {cu_seqlens.data(), slots.data(), has_initial_state.data(), num_seqs(), num_tokens()};
  }
};

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace ds::kernels::test
