#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "worker/backend/cuda_backend.h"

namespace ds::worker {
namespace {

// One block per output row; the row's elements strided over the threads.
__global__ void gather_rows_kernel(const __nv_bfloat16* x, int64_t ldx, const int32_t* row_ids, int64_t width,
                                   __nv_bfloat16* out) {
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* src = x + static_cast<int64_t>(row_ids[row]) * ldx;
  __nv_bfloat16* dst = out + row * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void cuda_gather_rows(const kernels::bf16* x, int64_t ldx, const int32_t* row_ids, int64_t rows, int64_t width,
                      kernels::bf16* out, cudaStream_t stream) {
  if (rows == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), ldx, row_ids, width, reinterpret_cast<__nv_bfloat16*>(out));
  check_cuda(cudaGetLastError(), "gather_rows_kernel launch");
}

}  // namespace ds::worker
