// GPU smoke test: the toolchain, cuBLASLt and NCCL all work on this host. Run from the
// relocatable bundle on the GPU host (tests/gpu/run.sh).
#include <cuda_bf16.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/gpu/cuda_check.h"

namespace {

__global__ void saxpy_kernel(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

std::vector<float> random_vector(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(GpuSmoke, KernelLaunch) {
  const int n = 1 << 20;
  auto x = random_vector(n, 1), y = random_vector(n, 2);
  float *dx, *dy;
  ASSERT_CUDA(cudaMalloc(&dx, n * sizeof(float)));
  ASSERT_CUDA(cudaMalloc(&dy, n * sizeof(float)));
  ASSERT_CUDA(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  saxpy_kernel<<<(n + 255) / 256, 256>>>(n, 3.f, dx, dy);
  ASSERT_CUDA(cudaGetLastError());
  std::vector<float> out(n);
  ASSERT_CUDA(cudaMemcpy(out.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  // The device contracts a*x+y into one FMA; so does std::fma, so the results match bit for bit.
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], std::fma(3.f, x[i], y[i])) << i;
  cudaFree(dx);
  cudaFree(dy);
}

// C[m,n] = A[m,k] * B[n,k]^T in BF16 with fp32 accumulation (row-major), like x·Wᵀ.
TEST(GpuSmoke, CublasLtBf16Matmul) {
  const int m = 64, n = 96, k = 128;
  auto a = random_vector(size_t(m) * k, 3), b = random_vector(size_t(n) * k, 4);
  std::vector<__nv_bfloat16> ha(a.size()), hb(b.size());
  for (size_t i = 0; i < a.size(); ++i) ha[i] = __float2bfloat16(a[i]);
  for (size_t i = 0; i < b.size(); ++i) hb[i] = __float2bfloat16(b[i]);

  __nv_bfloat16 *da, *db, *dc;
  ASSERT_CUDA(cudaMalloc(&da, ha.size() * 2));
  ASSERT_CUDA(cudaMalloc(&db, hb.size() * 2));
  ASSERT_CUDA(cudaMalloc(&dc, size_t(m) * n * 2));
  ASSERT_CUDA(cudaMemcpy(da, ha.data(), ha.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(db, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemset(dc, 0xff, size_t(m) * n * 2));  // poison

  cublasLtHandle_t lt;
  ASSERT_CUBLAS(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t desc;
  ASSERT_CUBLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: C^T[n,m] = B[n,k] * A^T  ->  op(A_cm)=B^T? Use the standard trick:
  // row-major C = A Bᵀ equals column-major Cᵀ = B Aᵀ with B as "transposed" operand.
  cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  ASSERT_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  ASSERT_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  cublasLtMatrixLayout_t la, lb, lc;
  ASSERT_CUBLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, n, k));  // B stored [n][k] -> cm k x n
  ASSERT_CUBLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, m, k));  // A stored [m][k] -> cm k x m
  ASSERT_CUBLAS(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, m, n));  // C stored [m][n] -> cm n x m
  float alpha = 1.f, beta = 0.f;
  ASSERT_CUBLAS(cublasLtMatmul(lt, desc, &alpha, db, la, da, lb, &beta, dc, lc, dc, lc, nullptr, nullptr, 0, 0));
  ASSERT_CUDA(cudaDeviceSynchronize());

  std::vector<__nv_bfloat16> hc(size_t(m) * n);
  ASSERT_CUDA(cudaMemcpy(hc.data(), dc, hc.size() * 2, cudaMemcpyDeviceToHost));
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double ref = 0;
      for (int p = 0; p < k; ++p) {
        ref += double(__bfloat162float(ha[size_t(i) * k + p])) * __bfloat162float(hb[size_t(j) * k + p]);
      }
      float got = __bfloat162float(hc[size_t(i) * n + j]);
      ASSERT_NEAR(got, ref, 1e-2 * std::max(1.0, std::fabs(ref))) << "C[" << i << "][" << j << "]";
    }
  }
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
}

TEST(GpuSmoke, NcclOneRankAllReduce) {
  ncclUniqueId id;
  ASSERT_NCCL(ncclGetUniqueId(&id));
  ncclComm_t comm;
  ASSERT_NCCL(ncclCommInitRank(&comm, 1, id, 0));
  const int n = 4096;
  auto x = random_vector(n, 5);
  float* d;
  ASSERT_CUDA(cudaMalloc(&d, n * sizeof(float)));
  ASSERT_CUDA(cudaMemcpy(d, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  ASSERT_NCCL(ncclAllReduce(d, d, n, ncclFloat, ncclSum, comm, nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> out(n);
  ASSERT_CUDA(cudaMemcpy(out.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], x[i]) << i;  // one rank: the sum is the input
  ncclCommDestroy(comm);
  cudaFree(d);
}

}  // namespace
