#include "kernels/gdn_batch_check.h"

#include <stdexcept>
#include <string>

namespace ds::kernels {

namespace {
[[noreturn]] void fail(const char* op, const std::string& why) {
  throw std::invalid_argument(std::string(op) + ": " + why);
}
}  // namespace

void check_varlen_batch_shape(const GdnVarlenBatch& batch, const char* op) {
  if (batch.num_seqs < 0) fail(op, "num_seqs is negative (" + std::to_string(batch.num_seqs) + ")");
  if (batch.num_tokens < 0) fail(op, "num_tokens is negative (" + std::to_string(batch.num_tokens) + ")");
  if (batch.num_seqs > 0 && (batch.cu_seqlens == nullptr || batch.slots == nullptr)) {
    fail(op, "cu_seqlens and slots must be given for a non-empty batch");
  }
}

void check_host_varlen_batch(const GdnVarlenBatch& batch, const char* op) {
  check_varlen_batch_shape(batch, op);
  if (batch.num_seqs == 0) {
    if (batch.num_tokens != 0) fail(op, "num_tokens is non-zero in a batch without sequences");
    return;
  }
  if (batch.cu_seqlens[0] != 0) fail(op, "cu_seqlens[0] must be 0, got " + std::to_string(batch.cu_seqlens[0]));
  for (int64_t s = 0; s < batch.num_seqs; ++s) {
    if (batch.cu_seqlens[s + 1] < batch.cu_seqlens[s]) {
      fail(op, "cu_seqlens decreases at sequence " + std::to_string(s));
    }
    if (batch.slots[s] < 0) fail(op, "slots[" + std::to_string(s) + "] is negative");
  }
  if (batch.cu_seqlens[batch.num_seqs] != batch.num_tokens) {
    fail(op, "cu_seqlens[num_seqs] = " + std::to_string(batch.cu_seqlens[batch.num_seqs]) +
                 " differs from num_tokens = " + std::to_string(batch.num_tokens));
  }
}

void check_row_stride(int64_t stride, int64_t row_width, const char* op, const char* tensor) {
  if (stride < row_width) {
    fail(op, std::string(tensor) + " row stride " + std::to_string(stride) + " is smaller than its row width " +
                 std::to_string(row_width));
  }
}

void check_positive(int64_t value, const char* op, const char* name) {
  if (value <= 0) fail(op, std::string(name) + " must be positive, got " + std::to_string(value));
}

void check_cuda_head_dims(const GdnDims& dims, const char* op) {
  validate_gdn_dims(dims, op);
  if (dims.head_k_dim != 128 || dims.head_v_dim != 128) {
    fail(op, "the CUDA kernels support head_k_dim = head_v_dim = 128, got " + std::to_string(dims.head_k_dim) +
                 " and " + std::to_string(dims.head_v_dim));
  }
}

}  // namespace ds::kernels
