// Assertion helpers for GPU tests: every CUDA, cuBLASLt and NCCL return code is checked.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#define ASSERT_CUDA(expr)                                                              \
  do {                                                                                 \
    cudaError_t err_ = (expr);                                                         \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);        \
  } while (0)

#define ASSERT_CUBLAS(expr)                                                            \
  do {                                                                                 \
    cublasStatus_t st_ = (expr);                                                       \
    ASSERT_EQ(st_, CUBLAS_STATUS_SUCCESS) << #expr << ": cublas status " << int(st_);     \
  } while (0)

#define ASSERT_NCCL(expr)                                                              \
  do {                                                                                 \
    ncclResult_t r_ = (expr);                                                          \
    ASSERT_EQ(r_, ncclSuccess) << #expr << ": " << ncclGetErrorString(r_);             \
  } while (0)
