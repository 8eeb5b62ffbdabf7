// The GDN input-projection stage at the shapes of GPU.md, three ways:
//   fused: one merged GEMM x·[W_qkvz; W_ba]ᵀ → [T, 2K+2V+2Hv]; the consumers read views (no copy);
//   split: GEMM qkvz + GEMM ba + our fused_qkvzba_split_reshape_cat (as SGLang runs it);
//   eager: GEMM qkvz + GEMM ba + one strided copy per output (q|k|v, z, b, a).
// Also the split kernel alone, as GB/s against the card's device copy ceiling (measured at start), for both layouts.
// Usage: gdn_projection_bench   (prints a table; no arguments)
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kernels/gdn_projection.h"
#include "tests/gpu/gdn_bench_util.h"

namespace {

using ds::kernels::bf16;
using ds::kernels::GdnDims;
using ds::kernels::QkvzLayout;
using ds::kernels::gpu_bench::check;
using ds::kernels::gpu_bench::copy_gbs;
using ds::kernels::gpu_bench::do_bench_us;
using ds::kernels::gpu_bench::gpu_name_or_skip;
using ds::kernels::gpu_bench::median_us;

void check_lt(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuBLASLt error %d in %s\n", int(st), what);
    std::exit(1);
  }
}

// Row-major out[T, N] (row stride ldc) = x[T, H] · w[N, H]ᵀ in BF16 with fp32 accumulation.
class Gemm {
 public:
  Gemm(cublasLtHandle_t lt, int64_t T, int64_t N, int64_t H, int64_t ldc, void* workspace, size_t ws_bytes)
      : lt_(lt), workspace_(workspace), ws_bytes_(ws_bytes) {
    check_lt(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    const cublasOperation_t trans_a = CUBLAS_OP_T;
    check_lt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "transa");
    // Column-major view: out_cm [N, T] = w_cm[H, N]ᵀ · x_cm[H, T].
    check_lt(cublasLtMatrixLayoutCreate(&a_, CUDA_R_16BF, H, N, H), "layout a");
    check_lt(cublasLtMatrixLayoutCreate(&b_, CUDA_R_16BF, H, T, H), "layout b");
    check_lt(cublasLtMatrixLayoutCreate(&c_, CUDA_R_16BF, N, T, ldc), "layout c");
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "pref");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                  sizeof(ws_bytes)),
             "pref ws");
    int found = 0;
    check_lt(cublasLtMatmulAlgoGetHeuristic(lt_, desc_, a_, b_, c_, c_, pref, 1, &heuristic_, &found), "heuristic");
    if (found == 0) {
      std::fprintf(stderr, "no cuBLASLt algorithm for T=%ld N=%ld H=%ld\n", long(T), long(N), long(H));
      std::exit(1);
    }
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~Gemm() {
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(c_);
    cublasLtMatmulDescDestroy(desc_);
  }
  void run(const bf16* x, const bf16* w, bf16* out, cudaStream_t stream) const {
    const float alpha = 1.f, beta = 0.f;
    check_lt(cublasLtMatmul(lt_, desc_, &alpha, w, a_, x, b_, &beta, out, c_, out, c_, &heuristic_.algo, workspace_,
                            ws_bytes_, stream),
             "matmul");
  }

 private:
  cublasLtHandle_t lt_;
  void* workspace_;
  size_t ws_bytes_;
  cublasLtMatmulDesc_t desc_;
  cublasLtMatrixLayout_t a_, b_, c_;
  cublasLtMatmulHeuristicResult_t heuristic_{};
};

struct Shape {
  const char* name;
  int64_t hidden;
  GdnDims dims;  // per rank
  int64_t T;
  double sglang_split_us;  // GPU.md anchors (0 = none)
  double sglang_two_gemms_us;
  double sglang_merged_us;
};

// One rotating copy of everything a projection call touches.
struct Buffers {
  bf16 *x, *w_merged, *merged_out, *qkvz, *ba, *mixed, *z, *b, *a;
};

template <typename T>
T* alloc(size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  check(cudaMemset(p, 0, n * sizeof(T)), "cudaMemset");
  return static_cast<T*>(p);
}

void bench_shape(cublasLtHandle_t lt, const Shape& s, void* ws, size_t ws_bytes, cudaStream_t stream) {
  const GdnDims& d = s.dims;
  const int64_t T = s.T, H = s.hidden, C = d.conv_dim(), V = d.value_dim(), Hv = d.num_v_heads;
  const int64_t n_qkvz = C + V, n_ba = 2 * Hv, n_all = n_qkvz + n_ba;
  const size_t set_bytes = size_t(T * H + n_all * H + 3 * T * n_all) * sizeof(bf16);
  const int copies = ds::kernels::gpu_bench::rotation_copies(set_bytes);
  std::vector<Buffers> sets(copies);
  for (auto& b : sets) {
    b.x = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(T * H * sizeof(bf16), 1));
    b.w_merged = static_cast<bf16*>(ds::kernels::gpu_bench::device_random(n_all * H * sizeof(bf16), 2));
    b.merged_out = alloc<bf16>(T * n_all);
    b.qkvz = alloc<bf16>(T * n_qkvz);
    b.ba = alloc<bf16>(T * n_ba);
    b.mixed = alloc<bf16>(T * C);
    b.z = alloc<bf16>(T * V);
    b.b = alloc<bf16>(T * Hv);
    b.a = alloc<bf16>(T * Hv);
  }
  // W_ba is the tail rows of the merged weight, so the two-GEMM forms read the same bytes.
  const Gemm merged(lt, T, n_all, H, n_all, ws, ws_bytes);
  const Gemm gemm_qkvz(lt, T, n_qkvz, H, n_qkvz, ws, ws_bytes);
  const Gemm gemm_ba(lt, T, n_ba, H, n_ba, ws, ws_bytes);
  auto at = [&](int i) -> Buffers& { return sets[i % copies]; };
  auto two_gemms = [&](Buffers& b) {
    gemm_qkvz.run(b.x, b.w_merged, b.qkvz, stream);
    gemm_ba.run(b.x, b.w_merged + n_qkvz * H, b.ba, stream);
  };
  auto split_kernel = [&](Buffers& b, QkvzLayout layout) {
    ds::kernels::cuda::fused_qkvzba_split_reshape_cat(b.qkvz, n_qkvz, b.ba, n_ba, T, d, layout, b.mixed, b.z, b.b, b.a,
                                                      stream);
  };
  auto eager_copies = [&](Buffers& b) {
    const size_t e = sizeof(bf16);
    check(cudaMemcpy2DAsync(b.mixed, C * e, b.qkvz, n_qkvz * e, C * e, T, cudaMemcpyDeviceToDevice, stream), "cp");
    check(cudaMemcpy2DAsync(b.z, V * e, b.qkvz + C, n_qkvz * e, V * e, T, cudaMemcpyDeviceToDevice, stream), "cp");
    check(cudaMemcpy2DAsync(b.b, Hv * e, b.ba, n_ba * e, Hv * e, T, cudaMemcpyDeviceToDevice, stream), "cp");
    check(cudaMemcpy2DAsync(b.a, Hv * e, b.ba + Hv, n_ba * e, Hv * e, T, cudaMemcpyDeviceToDevice, stream), "cp");
  };

  // Per-call times inside a CUDA graph (the server replays its steps from graphs), and the split
  // kernel also per launch: on an idle GPU (launch latency included) and as Triton's do_bench times it.
  using ds::kernels::gpu_bench::graph_us;
  const double t_merged =
      graph_us([&](int i) { merged.run(at(i).x, at(i).w_merged, at(i).merged_out, stream); }, stream);
  const double t_two = graph_us([&](int i) { two_gemms(at(i)); }, stream);
  const double t_split_c = graph_us([&](int i) { split_kernel(at(i), QkvzLayout::kContiguous); }, stream);
  const double t_split_i = graph_us([&](int i) { split_kernel(at(i), QkvzLayout::kInterleavedGroups); }, stream);
  const double t_split_event = median_us([&](int i) { split_kernel(at(i), QkvzLayout::kContiguous); }, stream);
  const double t_split_do_bench = do_bench_us([&](int i) { split_kernel(at(i), QkvzLayout::kContiguous); }, stream);
  const double t_split_stage = graph_us(
      [&](int i) {
        two_gemms(at(i));
        split_kernel(at(i), QkvzLayout::kContiguous);
      },
      stream);
  const double t_eager_stage = graph_us(
      [&](int i) {
        two_gemms(at(i));
        eager_copies(at(i));
      },
      stream);
  const double split_bytes = 2.0 * double(T) * double(n_all) * sizeof(bf16);
  const double gbs_c = split_bytes / t_split_c * 1e-3, gbs_i = split_bytes / t_split_i * 1e-3;
  const double gemm_flops = 2.0 * double(T) * double(n_all) * double(H);

  std::printf(
      "%-26s T=%-6ld | merged GEMM %8.1f us (%5.1f TFLOP/s) | fused stage %8.1f us (= merged GEMM + 0 copies)\n",
      s.name, long(T), t_merged, gemm_flops / t_merged * 1e-6, t_merged);
  std::printf(
      "%-26s          | 2 GEMMs %8.1f | split kernel contiguous %6.1f us %6.0f GB/s (%3.0f%% of copy) | "
      "interleaved %6.1f us %6.0f GB/s (%3.0f%%)\n",
      "", t_two, t_split_c, gbs_c, 100 * gbs_c / copy_gbs(), t_split_i, gbs_i, 100 * gbs_i / copy_gbs());
  std::printf(
      "%-26s          | split kernel per launch: idle GPU %6.1f us, do_bench (L2 flushed, launch queued) %6.1f us | "
      "split stage %8.1f us | eager stage %8.1f us",
      "", t_split_event, t_split_do_bench, t_split_stage, t_eager_stage);
  if (s.sglang_split_us > 0) {
    std::printf(" | SGLang (GPU.md): 2 GEMMs %.1f, split %.1f, merged %.1f", s.sglang_two_gemms_us, s.sglang_split_us,
                s.sglang_merged_us);
  }
  std::printf("\n");
  for (auto& b : sets) {
    for (bf16* p : {b.x, b.w_merged, b.merged_out, b.qkvz, b.ba, b.mixed, b.z, b.b, b.a}) cudaFree(p);
  }
}

}  // namespace

int main() {
  const std::string gpu = gpu_name_or_skip();
  std::printf(
      "gdn_projection_bench on %s; ceilings: copy %.2f TB/s, bf16 GEMM ~780-800 TFLOP/s\n"
      "times: per call inside a CUDA graph of 20 calls, inputs rotated over > L2\n",
      gpu.c_str(), copy_gbs() / 1000);
  cublasLtHandle_t lt;
  check_lt(cublasLtCreate(&lt), "cublasLtCreate");
  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "stream");
  const size_t ws_bytes = size_t(32) << 20;
  void* ws = nullptr;
  check(cudaMalloc(&ws, ws_bytes), "workspace");
  // Qwen3.5-35B-A3B at TP 2: hidden 2048, Hk 16 / Hv 32 total. Qwen3.5-9B: hidden 4096, Hk 16 / Hv 32.
  // Qwen3.5-27B: hidden 5120, Hk 16 / Hv 48 (ratio 3).
  const std::vector<Shape> shapes = {
      {"Qwen3.5-35B-A3B TP2", 2048, {8, 16, 128, 128}, 8, 6.0, 24.1, 18.1},
      {"Qwen3.5-35B-A3B TP2", 2048, {8, 16, 128, 128}, 256, 8.7, 26.7, 20.4},
      {"Qwen3.5-35B-A3B TP2", 2048, {8, 16, 128, 128}, 4096, 44.4, 150.1, 150.1},
      {"Qwen3.5-9B TP1", 4096, {16, 32, 128, 128}, 64, 7.7, 57.1, 51.0},
      {"Qwen3.5-9B TP1", 4096, {16, 32, 128, 128}, 16384, 355, 2397, 2300},
      {"Qwen3.5-27B TP1 (ratio 3)", 5120, {16, 48, 128, 128}, 16384, 800, 0, 0},
  };
  for (const auto& s : shapes) bench_shape(lt, s, ws, ws_bytes, stream);
  std::printf("(27B anchor: SGLang falls back to eager split/cat at ratio 3: 800 us at T=16384)\n");
  cudaFree(ws);
  cublasLtDestroy(lt);
  return 0;
}
