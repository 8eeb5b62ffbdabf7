#include "kernels/gdn_types.h"

#include <stdexcept>
#include <string>

namespace ds::kernels {

void validate_gdn_dims(const GdnDims& dims, const char* what) {
  auto fail = [&](const std::string& why) { throw std::invalid_argument(std::string(what) + ": " + why); };
  if (dims.num_k_heads <= 0) fail("num_k_heads must be positive, got " + std::to_string(dims.num_k_heads));
  if (dims.num_v_heads <= 0) fail("num_v_heads must be positive, got " + std::to_string(dims.num_v_heads));
  if (dims.head_k_dim <= 0) fail("head_k_dim must be positive, got " + std::to_string(dims.head_k_dim));
  if (dims.head_v_dim <= 0) fail("head_v_dim must be positive, got " + std::to_string(dims.head_v_dim));
  if (dims.num_v_heads % dims.num_k_heads != 0) {
    fail("num_v_heads (" + std::to_string(dims.num_v_heads) + ") must be a multiple of num_k_heads (" +
         std::to_string(dims.num_k_heads) + ")");
  }
}

}  // namespace ds::kernels
