// Internal to the GDN kernels: argument checks shared by the CPU and CUDA entry points.
// Every check throws std::invalid_argument naming the op and the offending argument.
#pragma once

#include <cstdint>

#include "kernels/gdn_types.h"

namespace ds::kernels {

// Scalar checks that need no access to the batch arrays (usable for device batches).
void check_varlen_batch_shape(const GdnVarlenBatch& batch, const char* op);

// Full check of a host batch: cu_seqlens starts at 0, never decreases, ends at num_tokens;
// slots are non-negative.
void check_host_varlen_batch(const GdnVarlenBatch& batch, const char* op);

// Throws unless `stride` >= `row_width`.
void check_row_stride(int64_t stride, int64_t row_width, const char* op, const char* tensor);

// Throws unless `value` > 0.
void check_positive(int64_t value, const char* op, const char* name);

// The CUDA GDN core kernels are specialised for dk = dv = 128.
void check_cuda_head_dims(const GdnDims& dims, const char* op);

}  // namespace ds::kernels
