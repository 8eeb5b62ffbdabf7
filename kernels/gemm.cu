#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/fp8_quant.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_skinny.cuh"
#include "kernels/gemm_tile.cuh"

namespace ds::kernels::cuda {

namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

void check_lt(cublasStatus_t st, const char* what, const std::string& shape) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed (status " + std::to_string(int(st)) +
                             ") for " + shape);
  }
}

std::string shape_string(int64_t T, int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  return "GEMM T=" + std::to_string(T) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
         " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy);
}

void check_shape(const char* op, int64_t T, int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  if (T < 0 || N <= 0 || K <= 0 || ldx < K || ldy < N || T > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
    throw std::invalid_argument(std::string(op) + ": bad " + shape_string(T, N, K, ldx, ldy));
  }
}

// Largest power of two (<= 16) dividing the address and the row pitch in bytes.
int alignment_of(const void* p, int64_t row_bytes) {
  const uint64_t bits = reinterpret_cast<uint64_t>(p) | uint64_t(row_bytes) | 16u;
  return int(bits & (~bits + 1));
}

// The preferences every plan shares: the workspace, and split-K only where the partial sums stay
// fp32. cuBLASLt's default also allows reductions in the output type (INPLACE / OUTPUT_TYPE), which
// rounds every partial sum to BF16; small-T shapes (the ones autotuned) often pick those and carry
// several times the error of an unsplit product.
void set_common_preferences(cublasLtMatmulPreference_t pref, const size_t& workspace_bytes) {
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                       sizeof(workspace_bytes));
  const uint32_t fp32_reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &fp32_reductions,
                                       sizeof(fp32_reductions));
}

constexpr int kAutotuneCandidates = 8;
constexpr int kAutotuneRuns = 8;
constexpr int64_t kAutotuneMaxTokens = 256;

// Small-T GEMMs are weight-bound and cuBLASLt's first heuristic pick is often not the fastest
// there, so the first call of such a shape times the candidates on the real operands and keeps the
// fastest. Only when that is harmless: y is write-only (beta == 0) and the stream is not being
// captured into a graph.
bool may_time(int64_t T, float beta, cudaStream_t stream) {
  if (T > kAutotuneMaxTokens || beta != 0.f) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone;
}

// One matmul y = x·Wᵀ (beta 0) with the given algorithm.
struct MatmulCall {
  cublasLtHandle_t handle;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t w_layout, x_layout, y_layout;
  const void *x, *w;
  void* y;
  void* workspace;
  size_t workspace_bytes;
  cudaStream_t stream;

  cublasStatus_t operator()(const cublasLtMatmulAlgo_t& algo) const {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(handle, desc, &alpha, w, w_layout, x, x_layout, &beta, y, y_layout, y, y_layout, &algo,
                          workspace, workspace_bytes, stream);
  }
};

// Reads `words` 16-byte words of the zeroed `buffer` (the autotune's L2 eviction: reads leave clean
// lines, where writes would leave the timed call write-backs to pay for) and keeps nothing: the
// sum is never the compared value. Like the kernels that precede GEMMs in a forward pass (norms,
// activations, attention), it lets a programmatic launch after it start at once, so a timed
// skinny GEMM overlaps its tail as it would theirs.
__global__ void evict_l2_kernel(const uint4* buffer, size_t words, unsigned* sink) {
  cuda_utils::allow_dependent_launch();
  unsigned sum = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) {
    sum += buffer[i].x;
  }
  if (sum == 0x9e3779b9u) *sink = sum;
}

// Milliseconds that kAutotuneRuns runs of `call` add (after one warm-up run) to a queue in which
// each follows a read of `evict_bytes` of `evict` (zeroed; its last 16 bytes are the read's sink):
// the queue's time minus that of the reads alone. The reads evict the operands from L2: in a
// forward pass a layer's weights come from memory, while back-to-back runs of one small GEMM would
// find them in L2 and favour whichever path streams memory worst. Queued, as in a forward pass, a
// call's start overlaps the end of what precedes it (launch latency, programmatic dependent launch).
template <typename Call>
float time_runs(const Call& call, void* evict, size_t evict_bytes, cudaStream_t stream) {
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), "autotune event");
  check_cuda(cudaEventCreate(&stop), "autotune event");
  const auto queue_ms = [&](bool with_calls) {
    check_cuda(cudaEventRecord(start, stream), "autotune record");
    for (int r = 0; r < kAutotuneRuns; ++r) {
      evict_l2_kernel<<<1024, 512, 0, stream>>>(static_cast<const uint4*>(evict), evict_bytes / 16 - 1,
                                                static_cast<unsigned*>(evict) + evict_bytes / 4 - 4);
      if (with_calls) call();
    }
    check_cuda(cudaEventRecord(stop, stream), "autotune record");
    check_cuda(cudaEventSynchronize(stop), "autotune sync");
    cuda_utils::check_launch("autotune L2 eviction");
    float ms = 0.f;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "autotune elapsed");
    return ms;
  };
  call();
  queue_ms(false);  // warm-up
  // The median of three differences: a disturbance during one queue (another process, a clock
  // change) would otherwise fix a wrong plan for the runner's life.
  float ms[3];
  for (float& m : ms) m = queue_ms(true) - queue_ms(false);
  std::sort(ms, ms + 3);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return std::max(ms[1], 0.f);
}

// A time_runs result as microseconds per call, for GemmRunner::last_autotune.
std::string per_call_us(float queue_ms) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f us", double(queue_ms) * 1e3 / kAutotuneRuns);
  return text;
}

// "skinny/<rows per block>x<splits>", for GemmRunner::last_autotune.
std::string tiling_name(const SkinnyTiling& tiling) {
  return "skinny/" + std::to_string(tiling.tile_rows) + "x" + std::to_string(tiling.splits);
}

// The fastest of the candidates by time_runs (candidates that refuse these operands are skipped;
// the first candidate is the fallback).
cublasLtMatmulAlgo_t fastest(const MatmulCall& call, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                             const std::string& shape, void* evict, size_t evict_bytes, float* best_time = nullptr) {
  float best_ms = INFINITY;
  cublasLtMatmulAlgo_t best = candidates[0].algo;
  for (int i = 0; i < count; ++i) {
    if (call(candidates[i].algo) != CUBLAS_STATUS_SUCCESS) {
      // A refused candidate can leave its failed launch in the runtime's last-error slot, which
      // the next kernel's launch check would then report as its own failure.
      cudaGetLastError();
      continue;
    }
    const float ms = time_runs([&] { check_lt(call(candidates[i].algo), "matmul (autotune)", shape); }, evict,
                               evict_bytes, call.stream);
    if (ms < best_ms) {
      best_ms = ms;
      best = candidates[i].algo;
    }
  }
  if (best_time) *best_time = best_ms;
  return best;
}

}  // namespace

struct GemmRunner::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  SkinnyTiling skinny;  // BF16 plans: splits > 0 when the skinny kernel with this tiling beat cuBLASLt
  bool fallback = false;  // FP8 plans only: cuBLASLt cannot run it, the W8A16 kernel does
  std::string reason;     // why, for GemmRunner::fp8_fallback_reason()
  // FP8 plans only: the token count cuBLASLt runs (>= T, see fp8_plan_for), whether D is the
  // runner's [t_pad, N] scratch instead of y, and the heuristic's candidates until the first call
  // has timed them (or could not: beta != 0, capturing).
  int64_t t_pad = 0;
  bool scratch = false;
  cublasLtMatmulHeuristicResult_t untimed[kAutotuneCandidates] = {};
  int untimed_count = 0;

  ~Plan() {
    if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
    if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
    if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// Row tiles the skinny kernel's counters cover: N up to 4M outputs.
constexpr size_t kSkinnyCounterTiles = 65536;

GemmRunner::GemmRunner(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  cublasLtHandle_t handle;
  check_lt(cublasLtCreate(&handle), "create", "handle");
  handle_ = handle;
  if (workspace_bytes_ > 0) check_cuda(cudaMalloc(&workspace_, workspace_bytes_), "GemmRunner workspace cudaMalloc");
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device), "SM count");
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "compute capability");
  hopper_ = major == 9;
  check_cuda(cudaMalloc(&skinny_counters_, kSkinnyCounterTiles * sizeof(unsigned)), "skinny counters cudaMalloc");
  check_cuda(cudaMemset(skinny_counters_, 0, kSkinnyCounterTiles * sizeof(unsigned)), "skinny counters memset");
  int l2_bytes = 0;
  check_cuda(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device), "L2 size");
  l2_evict_bytes_ = size_t(l2_bytes) * 3 / 2;
  check_cuda(cudaMalloc(&l2_evict_, l2_evict_bytes_), "autotune L2 eviction buffer cudaMalloc");
  check_cuda(cudaMemset(l2_evict_, 0, l2_evict_bytes_), "autotune L2 eviction buffer memset");
}

GemmRunner::~GemmRunner() {
  for (auto& [key, plan] : plans_) delete plan;
  for (auto& [key, plan] : fp8_plans_) delete plan;
  if (fp8_x_) cudaFree(fp8_x_);
  if (fp8_x_scales_) cudaFree(fp8_x_scales_);
  if (fp8_y_) cudaFree(fp8_y_);
  if (workspace_) cudaFree(workspace_);
  if (skinny_counters_) cudaFree(skinny_counters_);
  if (l2_evict_) cudaFree(l2_evict_);
  cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

// Row-major y[T,N] = x[T,K]·W[N,K]ᵀ is column-major yᵀ[N,T] = op(W)·xᵀ with W read as a K×N
// column-major matrix transposed: A = W (K×N, ld K, op T), B = x (K×T, ld ldx), D = y (N×T, ld ldy).
const GemmRunner::Plan& GemmRunner::plan_for(const Key& key, const Operands& operands) {
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
  const auto [T, N, K, ldx, ldy, out_f32, alignment] = key;
  const std::string shape = shape_string(T, N, K, ldx, ldy);
  auto plan = new Plan;
  try {
    check_lt(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc", shape);
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)),
             "set transa", shape);
    check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)),
             "set transb", shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_16BF, uint64_t(K), uint64_t(N), K), "W layout", shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->x_layout, CUDA_R_16BF, uint64_t(K), uint64_t(T), ldx), "x layout",
             shape);
    check_lt(cublasLtMatrixLayoutCreate(&plan->y_layout, out_f32 ? CUDA_R_32F : CUDA_R_16BF, uint64_t(N), uint64_t(T),
                                        ldy),
             "y layout", shape);
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference", shape);
    const uint32_t align = uint32_t(alignment);
    set_common_preferences(pref, workspace_bytes_);
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
    }
    cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates] = {};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
        static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, plan->x_layout, plan->y_layout,
        plan->y_layout, pref, kAutotuneCandidates, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(st, "heuristic", shape);
    if (found == 0) throw std::runtime_error("cuBLASLt found no algorithm for " + shape);
    plan->algo = results[0].algo;
    if (may_time(T, operands.beta, operands.stream)) {
      const MatmulCall call{static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, plan->x_layout,
                            plan->y_layout, operands.x, operands.w, operands.y, workspace_, workspace_bytes_,
                            operands.stream};
      float cublaslt_ms = INFINITY;
      plan->algo = fastest(call, results, found, shape, l2_evict_, l2_evict_bytes_, &cublaslt_ms);
      last_autotune_ = "cublaslt " + per_call_us(cublaslt_ms);
      if (skinny::supports(T, K, ldx, operands.x, operands.w)) {
        float best_ms = cublaslt_ms;
        for (const SkinnyTiling tiling : skinny::tilings(T, N, K, /*fp8=*/false, sms_, workspace_bytes_)) {
          const float skinny_ms = time_runs(
              [&] {
                run_skinny(operands.x, ldx, operands.w, nullptr, false, operands.y, ldy, T, N, K, out_f32,
                           operands.stream, tiling);
              },
              l2_evict_, l2_evict_bytes_, operands.stream);
          last_autotune_ += ", " + tiling_name(tiling) + " " + per_call_us(skinny_ms);
          if (skinny_ms < best_ms) best_ms = skinny_ms, plan->skinny = tiling;
        }
      }
    }
  } catch (...) {
    delete plan;
    throw;
  }
  plans_.emplace(key, plan);
  return *plan;
}

void GemmRunner::run(const void* x, int64_t ldx, const void* w, void* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
                     float beta, bool out_f32, cudaStream_t stream, Bf16Path path) {
  check_shape("cuda::GemmRunner::gemm", T, N, K, ldx, ldy);
  if (T == 0) return;
  const bool skinny_fits = beta == 0.f && skinny::supports(T, K, ldx, x, w);
  if (path == Bf16Path::kSkinny) {
    if (!skinny_fits) {
      throw std::invalid_argument("cuda::GemmRunner::gemm: the skinny kernel needs beta 0, 1 <= T <= 64, K % 128 == 0 "
                                  "and 16-byte aligned x rows and W; got " + shape_string(T, N, K, ldx, ldy));
    }
    run_skinny(x, ldx, w, nullptr, false, y, ldy, T, N, K, out_f32, stream);
    last_gemm_skinny_ = true;
    return;
  }
  const int out_bytes = out_f32 ? 4 : 2;
  const int alignment = std::min({alignment_of(x, ldx * 2), alignment_of(w, K * 2), alignment_of(y, ldy * out_bytes)});
  const Plan& plan = plan_for(Key{T, N, K, ldx, ldy, out_f32, alignment}, Operands{x, w, y, beta, stream});
  // (The plan's key holds the smallest alignment of x, w and y: check the skinny kernel's own needs.)
  last_gemm_skinny_ = path == Bf16Path::kAuto && plan.skinny.splits > 0 && skinny_fits;
  if (last_gemm_skinny_) {
    run_skinny(x, ldx, w, nullptr, false, y, ldy, T, N, K, out_f32, stream, plan.skinny);
    return;
  }
  const float alpha = 1.f;
  check_lt(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan.desc, &alpha, w, plan.w_layout, x,
                          plan.x_layout, &beta, y, plan.y_layout, y, plan.y_layout, &plan.algo, workspace_,
                          workspace_bytes_, stream),
           "matmul", shape_string(T, N, K, ldx, ldy));
}

void GemmRunner::run_skinny(const void* x, int64_t ldx, const void* w, const float* scale_inv, bool fp8, void* y,
                            int64_t ldy, int64_t T, int64_t N, int64_t K, bool out_f32, cudaStream_t stream,
                            SkinnyTiling tiling, const uint8_t* xq, const float* x_scales) {
  if (tiling.tile_rows == 0) tiling = skinny::default_tiling(T, N, K, sms_, workspace_bytes_);
  if (size_t((N + tiling.tile_rows - 1) / tiling.tile_rows) > kSkinnyCounterTiles) {
    throw std::invalid_argument("skinny GEMM: N=" + std::to_string(N) + " exceeds the counter tiles");
  }
  skinny::Params p = skinny::make_params(x, ldx, w, scale_inv, y, ldy, T, N, K, out_f32, tiling);
  p.partial = static_cast<float*>(workspace_);
  p.counters = skinny_counters_;
  p.xq = xq;
  p.x_scales = x_scales;
  if (fp8) {
    skinny::launch<uint8_t>(p, stream);
  } else {
    skinny::launch<__nv_bfloat16>(p, stream);
  }
}

namespace {

// How a grouped launch covers its slots' row tiles: 64-row tiles, or with FP8 weights and at most 8
// rows per expert 128-row ones where 64-row tiles of every slot would take more than one wave of
// blocks (one per SM): half as many blocks, each streaming twice as long (measured on the H100,
// 35B-A3B experts at T = 1: gate_up 23.8 -> 19.5 µs, 144 -> 72 blocks; down 17.0 -> 16.6, 288 ->
// 144). Tiles that still outnumber the SMs run two blocks per SM (measured on the H100, 35B-A3B
// layer, `moe_bench`, µs: FP8 in a graph T = 1 42.7 -> 41.5, where the down projection's 144 128-row
// blocks had taken two waves, T = 2 64.9 -> 57.3, T = 8 123.8 -> 107.4, T = 16 245 -> 186, T = 32
// 397 -> 300, where the down projection had run ~25 waves of one block per SM; BF16 alone T = 1 61.3
// -> 55.0, T = 8 179.6 -> 160.2, T = 16 287.7 -> 264.3, T = 32 459.8 -> 408.5).
void set_grouped_tiling(skinny::Params& p, int64_t slots) {
  const int sms = cuda_utils::current_device_sm_count("cuda::grouped_skinny_gemm");
  const auto blocks = [&](int64_t tile_rows) { return slots * ((p.N + tile_rows - 1) / tile_rows); };
  const bool fp8 = p.scale_inv != nullptr;
  p.tile_rows = fp8 && skinny::has_tile_rows(128, true, p.T) && blocks(skinny::kRows) > sms ? 128 : skinny::kRows;
  p.splits = 1;
  p.two_per_sm = blocks(p.tile_rows) > sms;
}

}  // namespace

bool grouped_skinny_supports(int64_t max_rows, int64_t K, int64_t ldx, const void* x, const void* w) {
  return skinny::supports(max_rows, K, ldx, x, w);
}

void grouped_skinny_gemm(const bf16* x, int64_t ldx, const void* w, const float* scale_inv, bf16* y, int64_t ldy,
                         int64_t max_rows, int64_t N, int64_t K, const ExpertGroups& groups, cudaStream_t stream) {
  const bool extra_ok =
      groups.extra_expert < 0 || (groups.extra_w && grouped_skinny_supports(max_rows, K, ldx, x, groups.extra_w) &&
                                  (groups.extra_scale_inv != nullptr) == (scale_inv != nullptr));
  if (!grouped_skinny_supports(max_rows, K, ldx, x, w) || N <= 0 || ldy < N || groups.slots <= 0 ||
      groups.slots > 65535 || !groups.active_experts || !groups.row_offsets || !extra_ok) {
    throw std::invalid_argument("cuda::grouped_skinny_gemm: cannot run " + shape_string(max_rows, N, K, ldx, ldy) +
                                " over " + std::to_string(groups.slots) +
                                " expert slots (needs 1 <= rows <= 64, K % 128 == 0, ldx % 8 == 0, 16-byte aligned "
                                "x and w, 1 <= slots <= 65535, the expert list and row offsets, and for an extra "
                                "expert its 16-byte aligned matrix, with scales where w has them)");
  }
  skinny::Params p = skinny::make_params(x, ldx, w, scale_inv, y, ldy, max_rows, N, K, /*out_f32=*/false, {});
  set_grouped_tiling(p, groups.slots);
  p.active_experts = groups.active_experts;
  p.row_offsets = groups.row_offsets;
  p.x_rows = groups.x_rows;
  p.extra_expert = groups.extra_expert;
  p.extra_w = groups.extra_w;
  p.extra_scale_inv = groups.extra_scale_inv;
  if (scale_inv) {
    skinny::launch<uint8_t>(p, stream, unsigned(groups.slots));
  } else {
    skinny::launch<__nv_bfloat16>(p, stream, unsigned(groups.slots));
  }
}

void GemmRunner::skinny_gemm(const bf16* x, int64_t ldx, const void* w, const float* scale_inv, bf16* y, int64_t ldy,
                             int64_t T, int64_t N, int64_t K, SkinnyTiling tiling, cudaStream_t stream, bool w8a8) {
  check_shape("cuda::GemmRunner::skinny_gemm", T, N, K, ldx, ldy);
  const bool rows_ok = w8a8 ? scale_inv != nullptr && skinny_w8a8_supports(T, tiling)
                            : skinny::has_tile_rows(tiling.tile_rows, scale_inv != nullptr, T);
  const bool splits_ok = tiling.splits >= 1 && tiling.splits <= K / 128 &&
                         (tiling.splits == 1 || size_t(tiling.splits * T * N) * sizeof(float) <= workspace_bytes_);
  if (!skinny::supports(T, K, ldx, x, w) || !rows_ok || !splits_ok) {
    throw std::invalid_argument("cuda::GemmRunner::skinny_gemm: cannot run " + shape_string(T, N, K, ldx, ldy) +
                                " as " + tiling_name(tiling) +
                                " (needs 1 <= T <= 64, K % 128 == 0, 16-byte aligned x rows and W, 64 rows per "
                                "block or for T <= 8 32, (BF16) 48 or (FP8) 128, 1 <= splits <= K/128 with "
                                "partials fitting the workspace; W8A8: FP8 W, 64, 128, 80 or 96 rows, sm_90)");
  }
  if (w8a8) {
    run_skinny_w8a8(x, ldx, static_cast<const uint8_t*>(w), scale_inv, y, ldy, T, N, K, stream, tiling);
  } else {
    run_skinny(x, ldx, w, scale_inv, scale_inv != nullptr, y, ldy, T, N, K, /*out_f32=*/false, stream, tiling);
  }
}

void GemmRunner::gemm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t N,
                      int64_t K, float beta, cudaStream_t stream, Bf16Path path) {
  run(x, ldx, w, y, ldy, T, N, K, beta, false, stream, path);
}

void GemmRunner::gemm(const bf16* x, int64_t ldx, const bf16* w, float* y, int64_t ldy, int64_t T, int64_t N,
                      int64_t K, float beta, cudaStream_t stream, Bf16Path path) {
  run(x, ldx, w, y, ldy, T, N, K, beta, true, stream, path);
}

namespace {

// Block-FP8 weight GEMM: one 64×64 tile per block (kernels/gemm_tile.cuh).
__global__ void __launch_bounds__(gemm_tile::kThreads)
    gemm_fp8_kernel(const __nv_bfloat16* x, int64_t ldx, const uint8_t* w, const float* scale_inv, __nv_bfloat16* y,
                    int64_t ldy, int64_t T, int64_t N, int64_t K, float beta) {
  __shared__ gemm_tile::SharedTiles sh;
  gemm_tile::compute_tile(x, ldx, w, scale_inv, y, ldy, T, N, K, int64_t(blockIdx.y) * gemm_tile::kBM,
                          int64_t(blockIdx.x) * gemm_tile::kBN, beta, sh);
}

constexpr int kQuantWarps = 8;

// One warp per (token, 128-wide K group): each lane holds 4 consecutive values, the group's amax is
// a warp max, and lane 0 writes the scale. Plain IEEE division and cvt.rn.satfinite, so the result
// is bit-identical to cpu::quantize_fp8_per_token_group. Rows T..T_pad-1 (the padding cuBLASLt
// needs, see fp8_plan_for) are written as zeros with scale 1; the scale layout is [groups, T_pad].
// A programmatic launch that lets the next one start at once: the W8A8 skinny kernel after it then
// streams its weights while the kernels before finish (it waits for this one before reading xq).
__global__ void __launch_bounds__(kQuantWarps * 32)
    quantize_fp8_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int64_t T, int64_t T_pad, int64_t groups,
                        uint8_t* __restrict__ xq, float* __restrict__ scales) {
  cuda_utils::allow_dependent_launch();
  cuda_utils::wait_for_previous_grids();
  const int64_t item = int64_t(blockIdx.x) * kQuantWarps + threadIdx.x / 32;  // t · groups + g
  if (item >= T_pad * groups) return;
  const int64_t t = item / groups, g = item % groups, K = groups * kFp8BlockSize;
  const int lane = threadIdx.x % 32;
  const uint2 raw =
      t < T ? *reinterpret_cast<const uint2*>(x + t * ldx + g * kFp8BlockSize + lane * 4) : make_uint2(0u, 0u);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  const float v[4] = {lo.x, lo.y, hi.x, hi.y};
  fp8_quant::store_warp_group(v, xq + t * K + g * kFp8BlockSize, scales + g * T_pad + t);
}

void launch_quantize(const bf16* x, int64_t ldx, int64_t T, int64_t T_pad, int64_t K, uint8_t* xq, float* scales,
                     cudaStream_t stream) {
  const int64_t items = T_pad * (K / kFp8BlockSize);
  if (items == 0) return;
  cuda_utils::launch_programmatic(quantize_fp8_kernel, dim3(unsigned((items + kQuantWarps - 1) / kQuantWarps)),
                                  dim3(kQuantWarps * 32), 0, stream, "quantize_fp8_per_token_group",
                                  reinterpret_cast<const __nv_bfloat16*>(x), ldx, T, T_pad, K / kFp8BlockSize, xq,
                                  scales);
}

void check_fp8_operands(const char* op, const bf16* x, int64_t ldx, const uint8_t* w, int64_t T, int64_t N, int64_t K,
                        int64_t ldy) {
  check_shape(op, T, N, K, ldx, ldy);
  if (K % 8 != 0 || ldx % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w) % 8 != 0) {
    throw std::invalid_argument(std::string(op) + ": K and ldx must be multiples of 8 and x/W 16/8-byte aligned (" +
                                shape_string(T, N, K, ldx, ldy) + ")");
  }
}

}  // namespace

const char* to_string(Fp8Path path) {
  switch (path) {
    case Fp8Path::kAuto: return "auto";
    case Fp8Path::kCublasLt: return "cublaslt-w8a8";
    case Fp8Path::kKernel: return "w8a16-kernel";
    case Fp8Path::kSkinnyW8A8: return "w8a8-kernel";
  }
  return "?";
}

void quantize_fp8_per_token_group(const bf16* x, int64_t ldx, int64_t T, int64_t K, uint8_t* xq, float* scales,
                                  cudaStream_t stream) {
  if (T < 0 || K <= 0 || K % kFp8BlockSize != 0 || ldx < K || ldx % 4 != 0 ||
      reinterpret_cast<uintptr_t>(x) % 8 != 0) {
    throw std::invalid_argument("cuda::quantize_fp8_per_token_group: bad T=" + std::to_string(T) +
                                " K=" + std::to_string(K) + " ldx=" + std::to_string(ldx) +
                                " (K % 128 == 0, ldx % 4 == 0, x 8-byte aligned)");
  }
  launch_quantize(x, ldx, T, T, K, xq, scales, stream);
}

// Grows the activation buffers to rows·K (and their scales) and the output scratch to y_elems.
void GemmRunner::ensure_fp8_scratch(int64_t rows, int64_t K, size_t y_elems, cudaStream_t stream) {
  const size_t x_need = size_t(rows) * size_t(K);
  if (x_need <= fp8_x_capacity_ && y_elems <= fp8_y_capacity_) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &capture), "gemm_fp8 capture status");
  if (capture != cudaStreamCaptureStatusNone) {
    throw std::runtime_error("cuda::GemmRunner::gemm_fp8: the FP8 scratch must grow (T*K=" + std::to_string(x_need) +
                             ", output " + std::to_string(y_elems) +
                             ") during graph capture; run the same shapes once before capturing");
  }
  check_cuda(cudaStreamSynchronize(stream), "gemm_fp8 scratch sync");  // earlier GEMMs may still use the old ones
  if (x_need > fp8_x_capacity_) {
    if (fp8_x_) cudaFree(fp8_x_);
    if (fp8_x_scales_) cudaFree(fp8_x_scales_);
    fp8_x_ = nullptr;
    fp8_x_scales_ = nullptr;
    fp8_x_capacity_ = 0;
    check_cuda(cudaMalloc(&fp8_x_, x_need), "gemm_fp8 activation cudaMalloc");
    check_cuda(cudaMalloc(&fp8_x_scales_, x_need / size_t(kFp8BlockSize) * sizeof(float)), "gemm_fp8 scale cudaMalloc");
    fp8_x_capacity_ = x_need;
  }
  if (y_elems > fp8_y_capacity_) {
    if (fp8_y_) cudaFree(fp8_y_);
    fp8_y_ = nullptr;
    fp8_y_capacity_ = 0;
    check_cuda(cudaMalloc(&fp8_y_, y_elems * sizeof(bf16)), "gemm_fp8 output scratch cudaMalloc");
    fp8_y_capacity_ = y_elems;
  }
}

namespace {

// cuBLASLt 13.1 on H100 has block-scaled FP8 algorithms for T = 64, 1024, 8192 but none for T = 1
// or 33 (heuristic status 15, NOT_SUPPORTED). The likely rule: the VEC128_32F scales of x are a
// [K/128, T] tensor with T contiguous, and cuBLAS wants 16-byte rows of scale tensors (the same
// rule rounds the BLK128x128 grid's K/128 up to a multiple of 4, see fp8_plan_for), i.e. T % 4 == 0.
// The docs do not say, so small T is probed at plan time: padded to a multiple of each of
// kFp8TokenPads in turn, the first the heuristic accepts is kept (per shape, in the plan).
constexpr int64_t kFp8TokenAlign = 4;
constexpr int64_t kFp8TokenPads[] = {kFp8TokenAlign, 16, 64};
// Padding runs the matmul into a [T_pad, N] scratch (y has no rows to spare), so it is only done
// for at most this many tokens; a larger T that cuBLASLt cannot run as is (T % 4 != 0, or refused)
// is split into T - T % 64 rows run directly on y (multiples of 64 run, as measured) and the last
// T % 64 rows padded: one more read of W, ~1% of a prefill GEMM, instead of a scratch the size of y.
constexpr int64_t kFp8MaxPaddedTokens = 64;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void launch_fp8_kernel(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                       int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream) {
  const dim3 grid(unsigned((N + gemm_tile::kBN - 1) / gemm_tile::kBN), unsigned((T + gemm_tile::kBM - 1) / gemm_tile::kBM));
  gemm_fp8_kernel<<<grid, gemm_tile::kThreads, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(x), ldx, w_fp8,
                                                           weight_scale_inv, reinterpret_cast<__nv_bfloat16*>(y), ldy,
                                                           T, N, K, beta);
  check_cuda(cudaGetLastError(), "gemm_fp8 launch");
}

}  // namespace

// cuBLASLt block-scaled FP8 on the same column-major view as the BF16 plans: A = W (K×N, ld K,
// op T), B = xq (K×T_pad, ld K), C = D = y (N×T, ld ldy) or the scratch (N×T_pad, ld N); TN is
// what FP8 cuBLASLt requires.
//
// Scale layouts (cuBLAS docs, "Scaling factors layouts", as enforced by PyTorch's _scaled_mm since
// pytorch/pytorch#166752, which fixed silent wrong answers): both are described relative to the
// operand's own storage, whose inner (contiguous) dimension is K here for A and B alike.
//  - B, VEC128_32F (one scale per 128 inner elements): a [ceil(K/128), T_pad] tensor with the
//    OUTER dimension contiguous, scale(t, g) at g·T_pad + t. That is why quantize_fp8_per_token_group
//    writes scales[g·T + t] and not the row-major [T, K/128] one would write naturally.
//  - A, BLK128x128_32F (one scale per 128×128 block): scale(n-block nb, k-block kb) at nb·L4 + kb
//    with L4 = ceil(K/128) rounded up to a multiple of 4 (16-byte rows). The checkpoint's
//    weight_scale_inv is row-major [ceil(N/128), ceil(K/128)], i.e. nb·ceil(K/128) + kb: the same
//    memory exactly when ceil(K/128) % 4 == 0. So this path takes K % 512 == 0 only (every published
//    projection: K in {512, 2048, 4096, 5120, 12288, 17408}) and other K go to the kernel, rather
//    than copying the scales into a padded grid on every call.
// Both scales multiply (dequantized = fp8 · scale), the weight_scale_inv convention.
//
// Token padding (kFp8TokenPads): tried in order are T itself writing y directly (T % 4 == 0 only,
// so the scale tensor's rows stay 16-byte aligned), then, for T <= kFp8MaxPaddedTokens, T rounded
// up to 4, 16, 64 writing the scratch. Rows T.. of xq are zeros with scale 1 and their output rows
// are never copied out, so they cannot leak into y.
GemmRunner::Plan* GemmRunner::fp8_plan_for(const Fp8Key& key, const float* w_scale) {
  const auto [T, N, K, ldy, w_align, y_align] = key;
  const std::string shape = "FP8 " + shape_string(T, N, K, K, ldy);
  auto plan = new Plan;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    check_lt(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc", shape);
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const void* a_scale = w_scale;
    const void* b_scale = fp8_x_scales_;
    auto set = [&](cublasLtMatmulDescAttributes_t attr, const void* value, size_t size) {
      check_lt(cublasLtMatmulDescSetAttribute(plan->desc, attr, value, size), "set FP8 attribute", shape);
    };
    set(CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa));
    set(CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb));
    set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode));
    set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode));
    set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale));
    set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale));
    check_lt(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(N), K), "W layout", shape);
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference", shape);
    const uint32_t a_align = uint32_t(w_align), x_align = 16;
    set_common_preferences(pref, workspace_bytes_);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a_align, sizeof(a_align));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &x_align, sizeof(x_align));

    std::vector<std::pair<int64_t, bool>> attempts;  // (T_pad, output to scratch)
    if (T % kFp8TokenAlign == 0) attempts.emplace_back(T, false);
    if (T <= kFp8MaxPaddedTokens) {
      for (int64_t pad : kFp8TokenPads) {
        const std::pair<int64_t, bool> a{round_up(T, pad), true};
        if (std::find(attempts.begin(), attempts.end(), a) == attempts.end()) attempts.push_back(a);
      }
    }
    std::string tried;
    for (const auto& attempt : attempts) {
      const int64_t t_pad = attempt.first;
      const bool scratch = attempt.second;
      cublasLtMatrixLayout_t x_layout = nullptr, y_layout = nullptr;
      check_lt(cublasLtMatrixLayoutCreate(&x_layout, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(t_pad), K), "x layout",
               shape);
      check_lt(cublasLtMatrixLayoutCreate(&y_layout, CUDA_R_16BF, uint64_t(N), uint64_t(t_pad), scratch ? N : ldy),
               "y layout", shape);
      // The scratch comes from cudaMalloc (256-byte aligned) with rows of N elements.
      const uint32_t d_align = uint32_t(scratch ? alignment_of(nullptr, N * 2) : y_align);
      for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        cublasLtMatmulPreferenceSetAttribute(pref, attr, &d_align, sizeof(d_align));
      }
      cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates] = {};
      int found = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, x_layout,
                                         y_layout, y_layout, pref, kAutotuneCandidates, results, &found);
      if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
        plan->x_layout = x_layout;
        plan->y_layout = y_layout;
        plan->t_pad = t_pad;
        plan->scratch = scratch;
        plan->algo = results[0].algo;
        std::copy(results, results + found, plan->untimed);
        plan->untimed_count = found;
        break;
      }
      cudaGetLastError();
      cublasLtMatrixLayoutDestroy(x_layout);
      cublasLtMatrixLayoutDestroy(y_layout);
      tried += std::string(tried.empty() ? "" : ", ") + "T_pad=" + std::to_string(t_pad) +
               (scratch ? " via scratch" : " into y") + ": status " + std::to_string(int(st)) + ", " +
               std::to_string(found) + " algorithms";
    }
    if (plan->t_pad == 0) {
      // The capability probe: this cuBLASLt/card has no block-scaled FP8 kernel for the shape
      // (pre-12.9 cuBLASLt, or a card other than sm_90). Remembered as a kernel plan.
      plan->fallback = true;
      plan->reason = "cuBLASLt heuristic: no block-scaled FP8 algorithm for " + shape + " (" +
                     (tried.empty() ? "T % 4 != 0 and T > 64: no padding tried" : tried) + ")";
    }
  } catch (...) {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    delete plan;
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  fp8_plans_.emplace(key, plan);
  return plan;
}

void GemmRunner::reserve_fp8(int64_t max_tokens, int64_t max_k, int64_t max_n, cudaStream_t stream) {
  // Rows: the probe's round_up(T, kFp8MaxPaddedTokens) at most; the output scratch holds only padded
  // pieces (T_pad <= kFp8MaxPaddedTokens rows).
  ensure_fp8_scratch(round_up(max_tokens, kFp8MaxPaddedTokens), max_k, size_t(kFp8MaxPaddedTokens) * size_t(max_n),
                     stream);
}

size_t GemmRunner::fp8_scratch_bytes() const {
  return fp8_x_capacity_ + fp8_x_capacity_ / size_t(kFp8BlockSize) * sizeof(float) + fp8_y_capacity_ * sizeof(bf16);
}

bool GemmRunner::gemm_fp8_cublaslt(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv,
                                   bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K, float beta,
                                   cudaStream_t stream, std::string& reason) {
  const Fp8Key key{T, N, K, ldy, alignment_of(w_fp8, K), alignment_of(y, ldy * 2)};
  Plan* plan;
  if (auto it = fp8_plans_.find(key); it != fp8_plans_.end()) {
    plan = it->second;
  } else {
    // The probe names the scale buffer in the descriptor, so it exists (padding included) first.
    ensure_fp8_scratch(round_up(T, kFp8MaxPaddedTokens), K, 0, stream);
    plan = fp8_plan_for(key, weight_scale_inv);
  }
  if (plan->fallback) {
    reason = plan->reason;
    return false;
  }
  const int64_t t_pad = plan->t_pad;
  ensure_fp8_scratch(t_pad, K, plan->scratch ? size_t(t_pad) * size_t(N) : 0, stream);
  launch_quantize(x, ldx, T, t_pad, K, fp8_x_, fp8_x_scales_, stream);
  // The scale pointers live in the descriptor: set them for this call's weight (and the scratch,
  // which may have moved). Host-side stores, no GPU work.
  const std::string shape = "FP8 " + shape_string(T, N, K, ldx, ldy);
  const void* a_scale = weight_scale_inv;
  const void* b_scale = fp8_x_scales_;
  check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)),
           "set A scale", shape);
  check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)),
           "set B scale", shape);
  void* d = plan->scratch ? static_cast<void*>(fp8_y_) : static_cast<void*>(y);
  if (plan->untimed_count > 0) {
    // First call of the plan: time the candidates where that is harmless (the scratch is always
    // write-only before the copy-in below).
    if (plan->untimed_count > 1 && may_time(T, plan->scratch ? 0.f : beta, stream)) {
      const MatmulCall call{static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->w_layout, plan->x_layout,
                            plan->y_layout, fp8_x_, w_fp8, d, workspace_, workspace_bytes_, stream};
      plan->algo = fastest(call, plan->untimed, plan->untimed_count, shape, l2_evict_, l2_evict_bytes_);
    }
    plan->untimed_count = 0;
  }
  const size_t row_bytes = size_t(N) * sizeof(bf16);
  // beta != 0 through the scratch: copy y's T rows in, accumulate there, copy out. The padding
  // rows accumulate onto stale scratch contents, which are never read back.
  if (plan->scratch && beta != 0.f) {
    check_cuda(cudaMemcpy2DAsync(fp8_y_, row_bytes, y, size_t(ldy) * sizeof(bf16), row_bytes, size_t(T),
                                 cudaMemcpyDeviceToDevice, stream),
               "gemm_fp8 scratch copy-in");
  }
  const float alpha = 1.f;
  const cublasStatus_t st =
      cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan->desc, &alpha, w_fp8, plan->w_layout, fp8_x_,
                     plan->x_layout, &beta, d, plan->y_layout, d, plan->y_layout, &plan->algo, workspace_,
                     workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) {
    // Refused at launch although the heuristic offered it: remember and use the kernel (y is
    // untouched so far).
    cudaGetLastError();
    plan->fallback = true;
    plan->reason = "cuBLASLt matmul failed (status " + std::to_string(int(st)) + ") for " + shape;
    reason = plan->reason;
    return false;
  }
  if (plan->scratch) {
    check_cuda(cudaMemcpy2DAsync(y, size_t(ldy) * sizeof(bf16), fp8_y_, row_bytes, row_bytes, size_t(T),
                                 cudaMemcpyDeviceToDevice, stream),
               "gemm_fp8 scratch copy-out");
  }
  last_fp8_t_pad_ = t_pad;
  return true;
}

void GemmRunner::run_fp8_kernel(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv,
                                bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream,
                                SkinnyTiling tiling) {
  if (beta == 0.f && skinny::supports(T, K, ldx, x, w_fp8)) {
    run_skinny(x, ldx, w_fp8, weight_scale_inv, true, y, ldy, T, N, K, /*out_f32=*/false, stream, tiling);
  } else {
    launch_fp8_kernel(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, beta, stream);
  }
}

void GemmRunner::set_fp8_numerics(Fp8Numerics numerics) {
  fp8_numerics_ = numerics;
  fp8_skinny_plans_.clear();  // timed among the forms the old numerics allowed
}

bool GemmRunner::skinny_w8a8_supports(int64_t T, SkinnyTiling tiling) const {
  return hopper_ && skinny::supports_w8a8(T, tiling);
}

void GemmRunner::run_skinny_w8a8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv,
                                 bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K, cudaStream_t stream,
                                 SkinnyTiling tiling, const Fp8Rows* x_fp8) {
  if (!x_fp8) {
    ensure_fp8_scratch(T, K, 0, stream);
    launch_quantize(x, ldx, T, T, K, fp8_x_, fp8_x_scales_, stream);
  }
  run_skinny(x, ldx, w_fp8, weight_scale_inv, true, y, ldy, T, N, K, /*out_f32=*/false, stream, tiling,
             x_fp8 ? x_fp8->codes : fp8_x_, x_fp8 ? x_fp8->scales : fp8_x_scales_);
}

const GemmRunner::Fp8SkinnyPlan* GemmRunner::fp8_skinny_plan(const bf16* x, int64_t ldx, const uint8_t* w_fp8,
                                                             const float* weight_scale_inv, bf16* y, int64_t ldy,
                                                             int64_t T, int64_t N, int64_t K, float beta,
                                                             cudaStream_t stream, bool may_tune, const Fp8Rows* x_fp8) {
  if (beta != 0.f || !skinny::supports(T, K, ldx, x, w_fp8)) return nullptr;
  const SkinnyKey key{T, N, K, ldx, ldy, x_fp8 != nullptr};
  if (auto it = fp8_skinny_plans_.find(key); it != fp8_skinny_plans_.end()) return &it->second;
  if (!may_tune || !may_time(T, beta, stream)) return nullptr;  // decided on a later, timeable call
  Fp8SkinnyPlan plan;
  last_autotune_.clear();
  float best_ms[2] = {INFINITY, INFINITY};  // W8A16, W8A8
  const auto consider = [&](SkinnyTiling tiling, bool w8a8, const auto& run) {
    const float ms = time_runs(run, l2_evict_, l2_evict_bytes_, stream);
    last_autotune_ += std::string(last_autotune_.empty() ? "" : ", ") + (w8a8 ? "w8a8-" : "") + tiling_name(tiling) +
                      " " + per_call_us(ms);
    if (ms < best_ms[w8a8]) best_ms[w8a8] = ms, (w8a8 ? plan.w8a8 : plan.w8a16) = tiling;
  };
  // The forms fp8_numerics_ allows: W8A8 wherever it runs, W8A16 where W8A8 cannot (see Fp8Numerics).
  const bool w8a8_ok = fp8_numerics_ != Fp8Numerics::kW8A16 && skinny_w8a8_supports(T, {skinny::kRows, 1});
  const bool w8a16_ok = fp8_numerics_ != Fp8Numerics::kW8A8 || !w8a8_ok;
  if (w8a8_ok) ensure_fp8_scratch(T, K, 0, stream);  // not inside a timing
  for (const SkinnyTiling tiling : skinny::tilings(T, N, K, /*fp8=*/true, sms_, workspace_bytes_)) {
    if (w8a16_ok && skinny::has_tile_rows(tiling.tile_rows, /*fp8=*/true, T)) {
      consider(tiling, false, [&] {
        run_skinny(x, ldx, w_fp8, weight_scale_inv, true, y, ldy, T, N, K, /*out_f32=*/false, stream, tiling);
      });
    }
    if (w8a8_ok && skinny_w8a8_supports(T, tiling)) {
      consider(tiling, true,
               [&] { run_skinny_w8a8(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, stream, tiling, x_fp8); });
    }
  }
  plan.w8a8_faster = best_ms[1] < best_ms[0];
  const float skinny_ms = std::min(best_ms[0], best_ms[1]);
  if (fp8_numerics_ != Fp8Numerics::kW8A16 && K % (4 * kFp8BlockSize) == 0) {  // else cuBLASLt cannot run it
    std::string why;
    const auto w8a8 = [&] { return gemm_fp8_cublaslt(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, 0.f, stream, why); };
    if (w8a8()) {
      const float w8a8_ms = time_runs(w8a8, l2_evict_, l2_evict_bytes_, stream);
      last_autotune_ += ", cublaslt-w8a8 " + per_call_us(w8a8_ms);
      plan.beats_cublaslt = skinny_ms < w8a8_ms;
    }
  }
  return &fp8_skinny_plans_.emplace(key, plan).first->second;
}

void GemmRunner::gemm_fp8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                          int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream, Fp8Path path,
                          const Fp8Rows* x_fp8) {
  check_fp8_operands("cuda::GemmRunner::gemm_fp8", x, ldx, w_fp8, T, N, K, ldy);
  if (T == 0) return;
  std::string reason;
  const Fp8SkinnyPlan* skinny_plan = path == Fp8Path::kCublasLt
                                         ? nullptr
                                         : fp8_skinny_plan(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, beta,
                                                           stream, /*may_tune=*/path == Fp8Path::kAuto, x_fp8);
  const SkinnyTiling tiling = skinny_plan ? skinny_plan->w8a16 : SkinnyTiling{};
  const bool tuned_w8a8 =
      path == Fp8Path::kAuto && skinny_plan && skinny_plan->beats_cublaslt && skinny_plan->w8a8_faster;
  if (path == Fp8Path::kSkinnyW8A8 || tuned_w8a8) {
    const SkinnyTiling w8a8_tiling = skinny_plan && skinny_plan->w8a8.tile_rows
                                         ? skinny_plan->w8a8
                                         : skinny::default_tiling(T, N, K, sms_, workspace_bytes_);
    if (beta != 0.f || !skinny::supports(T, K, ldx, x, w_fp8) || !skinny_w8a8_supports(T, w8a8_tiling)) {
      throw std::invalid_argument("cuda::GemmRunner::gemm_fp8: the W8A8 skinny kernel cannot run " +
                                  shape_string(T, N, K, ldx, ldy) +
                                  " (needs beta 0, 1 <= T <= 64, K % 128 == 0, 16-byte aligned x rows and W, sm_90)");
    }
    run_skinny_w8a8(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, stream, w8a8_tiling, x_fp8);
    last_fp8_path_ = Fp8Path::kSkinnyW8A8;
    last_fp8_t_pad_ = 0;
    fp8_fallback_reason_ = tuned_w8a8 ? "T <= 64: the W8A8 skinny kernel timed fastest for this shape" : "";
    return;
  }
  if (path == Fp8Path::kKernel) {
    reason = "W8A16 kernel requested";
  } else if (fp8_numerics_ == Fp8Numerics::kW8A16) {
    reason = "W8A16 numerics (GemmRunner::set_fp8_numerics)";
  } else if (skinny_plan && skinny_plan->beats_cublaslt) {
    reason = "T <= 64: the W8A16 skinny kernel timed faster than cuBLASLt W8A8 for this shape";
  } else if (K % (4 * kFp8BlockSize) != 0) {
    reason = "K=" + std::to_string(K) + " is not a multiple of 512 (see fp8_plan_for)";
  }
  if (!reason.empty()) {
    if (path == Fp8Path::kCublasLt) {
      throw std::runtime_error("cuda::GemmRunner::gemm_fp8: cuBLASLt W8A8 unavailable: " + reason);
    }
    run_fp8_kernel(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, beta, stream, tiling);
    last_fp8_path_ = Fp8Path::kKernel;
    last_fp8_t_pad_ = 0;
    fp8_fallback_reason_ = reason;
    return;
  }
  // All T rows in one cuBLASLt call where it can; else a large T is split (see
  // kFp8MaxPaddedTokens) and each piece takes cuBLASLt or, where it cannot, the kernel.
  std::string why;
  last_fp8_t_pad_ = 0;
  bool all_cublaslt = gemm_fp8_cublaslt(x, ldx, w_fp8, weight_scale_inv, y, ldy, T, N, K, beta, stream, why);
  if (!all_cublaslt) {
    const int64_t tail = T > kFp8MaxPaddedTokens ? T % kFp8MaxPaddedTokens : 0;
    const int64_t pieces[2][2] = {{0, T - tail}, {T - tail, tail}};
    all_cublaslt = true;
    for (const auto& piece : pieces) {
      const int64_t t0 = piece[0], rows = piece[1];
      if (rows == 0) continue;
      // (Unsplit, the first piece is the call that just failed: its plan is cached as a fallback.)
      std::string piece_why;
      if (tail && gemm_fp8_cublaslt(x + t0 * ldx, ldx, w_fp8, weight_scale_inv, y + t0 * ldy, ldy, rows, N, K, beta,
                                    stream, piece_why)) {
        continue;
      }
      if (!piece_why.empty()) why = piece_why;
      if (path == Fp8Path::kCublasLt) {
        throw std::runtime_error("cuda::GemmRunner::gemm_fp8: cuBLASLt W8A8 unavailable: " + why);
      }
      run_fp8_kernel(x + t0 * ldx, ldx, w_fp8, weight_scale_inv, y + t0 * ldy, ldy, rows, N, K, beta, stream);
      all_cublaslt = false;
    }
  }
  last_fp8_path_ = all_cublaslt ? Fp8Path::kCublasLt : Fp8Path::kKernel;
  fp8_fallback_reason_ = all_cublaslt ? std::string() : why;
}

}  // namespace ds::kernels::cuda
