// Dense GEMM for every linear layer: y[T, N] = x[T, K] · W[N, K]ᵀ (+ beta · y).
//
// W is stored like the checkpoint, row-major [out = N, in = K]. x and y are row-major with row
// strides ldx >= K and ldy >= N (elements), so a GEMM can read or write a column slice of a wider
// buffer (e.g. write q_proj and k_proj outputs into one [T, N_q + N_k] buffer, or read a view).
//
// FP8 weights (block-FP8 checkpoints, quantization_config {"quant_method": "fp8",
// "weight_block_size": [128, 128]}): W_fp8 is E4M3 bytes [N, K]; weight_scale_inv is fp32
// [ceil(N/128), ceil(K/128)] row-major, and the real weight is W[n][k] = fp8(W_fp8[n][k]) ·
// weight_scale_inv[n/128][k/128]. Two numerics compute it (GemmRunner::gemm_fp8; which one,
// GemmRunner::set_fp8_numerics, default W8A8):
//  - W8A8 (Hopper): x is quantized per token and 128-wide K group to E4M3 with one fp32 scale
//    amax/448 (quantize_fp8_per_token_group), and cuBLASLt's block-scaled FP8 GEMM, or for T <= 64
//    tokens our skinny kernel's E4M3 wgmma, applies the 1×128 activation scales and the 128×128
//    weight scales (DeepSeek-V3 style, what the FP8 checkpoints were calibrated for). The CPU
//    reference is cpu::gemm_fp8_w8a8.
//  - our W8A16 kernel (any card, any K % 8 == 0): activations stay BF16, 128×128 weight blocks
//    are dequantized on the fly into shared memory, BF16 tensor-core MMA with fp32 accumulation.
//    The CPU reference is cpu::gemm_fp8 (dequantize W, sgemm).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "kernels/common.h"

namespace ds::kernels {

inline constexpr int64_t kFp8BlockSize = 128;  // weight_block_size of every published FP8 checkpoint

inline constexpr float kFp8E4M3Max = 448.f;

// E4M3 (fn variant: no infinities, NaN = 0x7f/0xff, max 448) to float, exact.
float fp8_e4m3_to_float(uint8_t v);
// float to E4M3, round to nearest even, saturating to ±448 (NaN -> 0x7f): what the GPU's
// cvt.rn.satfinite.e4m3x2.f32 does, so the CPU reference quantizes bit-identically.
uint8_t float_to_fp8_e4m3(float v);

namespace cpu {

// y = x·Wᵀ + beta·y through OpenBLAS cblas_sgemm (beta = 0: y is not read, so it may hold garbage).
void gemm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
          float beta = 0.f);

// Block-FP8 weight: dequantizes W (N·K floats of scratch) then gemm().
void gemm_fp8(const float* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, float* y, int64_t ldy,
              int64_t T, int64_t N, int64_t K, float beta = 0.f);

// W_fp8 [N, K] with weight_scale_inv [ceil(N/128), ceil(K/128)] -> fp32 [N, K].
void dequantize_fp8_weight(const uint8_t* w_fp8, const float* weight_scale_inv, int64_t N, int64_t K, float* w);

// Dynamic 1×128 activation quantization, the reference of cuda::quantize_fp8_per_token_group
// (same layout, bit-identical results): x [T, K] (row stride ldx, K % 128 == 0) -> xq [T, K] E4M3
// (dense) and scales [K/128, T]: scales[g·T + t] = amax(|x[t][128g, 128g+128)|) / 448 (1 for an
// all-zero group) and xq[t][k] = e4m3(x[t][k] / scale), so x ≈ fp8(xq)·scale.
void quantize_fp8_per_token_group(const float* x, int64_t ldx, int64_t T, int64_t K, uint8_t* xq, float* scales);

// The cuBLASLt W8A8 path's math: x quantized as above, dequantized, times the dequantized W.
void gemm_fp8_w8a8(const float* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, float* y,
                   int64_t ldy, int64_t T, int64_t N, int64_t K, float beta = 0.f);

}  // namespace cpu

namespace cuda {

// See cpu::quantize_fp8_per_token_group (layout and math). x 8-byte aligned, ldx % 4 == 0.
void quantize_fp8_per_token_group(const bf16* x, int64_t ldx, int64_t T, int64_t K, uint8_t* xq, float* scales,
                                  cudaStream_t stream);

// Which implementation a BF16 GEMM runs.
enum class Bf16Path {
  kAuto,      // cuBLASLt, or the skinny kernel where the plan's timing found it faster (T <= 64)
  kCublasLt,  // always cuBLASLt
  kSkinny,    // the skinny kernel, or std::invalid_argument where it cannot (tests, benchmarks)
};

// Which implementation a block-FP8 GEMM runs (see the file comment).
enum class Fp8Path {
  kAuto,        // what the runner's Fp8Numerics allows, the fastest of it per shape (see gemm_fp8)
  kCublasLt,    // cuBLASLt W8A8 or std::runtime_error saying why not (tests, benchmarks)
  kKernel,      // always our W8A16 kernel
  kSkinnyW8A8,  // our skinny kernel with x quantized as for cuBLASLt (T <= 64), or std::invalid_argument
};
const char* to_string(Fp8Path path);

// What Fp8Path::kAuto may compute (GemmRunner::set_fp8_numerics).
enum class Fp8Numerics {
  kW8A8,     // activations quantized per token and 128-group wherever a W8A8 kernel runs (cuBLASLt, or
             // our skinny kernel where it times faster at T <= 64), as vLLM and SGLang compute block-FP8;
             // W8A16 only where none can (not Hopper; K % 512 != 0 with beta != 0 or T > 64; K % 128 != 0)
  kW8A16,    // activations stay BF16: our W8A16 kernels at every T (prefill far slower)
  kFastest,  // per shape whichever of the two timed faster (numerics may differ between shapes and runs)
};
const char* to_string(Fp8Numerics numerics);
// "w8a8" | "w8a16" | "fastest"; std::invalid_argument naming the choices otherwise.
Fp8Numerics parse_fp8_numerics(const std::string& name);

// The rows of a grouped (MoE) GEMM, in device memory written by the routing kernel before it on the
// same stream: expert e's rows are [row_offsets[e], row_offsets[e+1]) of the sorted rows (at most
// max_rows each); active_experts lists the experts with rows, ascending, then -1 (`slots` entries).
struct ExpertGroups {
  const int32_t* active_experts = nullptr;
  int64_t slots = 0;
  const int32_t* row_offsets = nullptr;
  // Optional: the x row each sorted row reads (a gather folded into the GEMM's loads); without it
  // sorted row r reads x row r.
  const int32_t* x_rows = nullptr;
  // Optional: expert `extra_expert` multiplies by extra_w (block scales extra_scale_inv) instead of
  // the matrix of that index in w (the MoE shared expert run as one more expert).
  int64_t extra_expert = -1;
  const void* extra_w = nullptr;
  const float* extra_scale_inv = nullptr;
};

// The experts of a small MoE batch through the weight-streaming (skinny) kernel in one launch:
// for every active expert e, y's sorted rows of e = those rows of x · W_eᵀ, where W_e is the e-th
// [N, K] matrix of w (BF16, or E4M3 with scale_inv holding each expert's [ceil(N/128), K/128]
// block scales back to back), or extra_w. Every expert has at most max_rows <= 64 rows; K % 128 ==
// 0, ldx % 8 == 0, x, w (and extra_w) 16-byte aligned (grouped_skinny_supports). Throws
// std::invalid_argument otherwise.
void grouped_skinny_gemm(const bf16* x, int64_t ldx, const void* w, const float* scale_inv, bf16* y, int64_t ldy,
                         int64_t max_rows, int64_t N, int64_t K, const ExpertGroups& groups, cudaStream_t stream);
// Whether grouped_skinny_gemm takes these operands.
bool grouped_skinny_supports(int64_t max_rows, int64_t K, int64_t ldx, const void* x, const void* w);

// How GemmRunner's skinny kernel covers a shape: weight rows per block (64; for T <= 8 also 32, and 48
// for BF16, 128 for FP8 weights; W8A8 also 128, 80 or 96) and K splits; zeros: the kernel's default
// for the shape.
struct SkinnyTiling {
  int tile_rows = 0;
  int splits = 0;
};

// Owns a cuBLASLt handle and workspace (on the device current at construction) and caches one
// plan (matmul descriptor, layouts, algorithm) per distinct problem, so the steady state makes no
// cuBLASLt descriptor calls. For T <= 256 the first call of a shape with beta == 0 on a stream that
// is not capturing times cuBLASLt's top heuristic candidates on the real operands (synchronising
// the stream once; each timed run after an L2-sized read, so operands come from memory as in a
// forward pass) and keeps the fastest; otherwise the first heuristic pick is used. For T <= 64
// that timing also includes our skinny kernel (kernels/gemm_skinny.cuh: W streamed once, a
// programmatic dependent launch, split-K with a deterministic fixup where few row tiles) at each
// tiling it offers (SkinnyTiling), and the plan keeps the fastest. Not thread-safe: one runner per worker
// thread/stream.
// Every call is asynchronous on `stream` and CUDA-graph capturable once its plan exists.
// Errors (bad sizes, cuBLASLt failures) throw std::runtime_error naming the shape.
class GemmRunner {
 public:
  explicit GemmRunner(size_t workspace_bytes = size_t(32) << 20);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // BF16 x, W, y; fp32 accumulation; y = x·Wᵀ + beta·y (beta applied to the bf16 y).
  void gemm(const bf16* x, int64_t ldx, const bf16* w, bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
            float beta, cudaStream_t stream, Bf16Path path = Bf16Path::kAuto);
  // Same with an fp32 output (router logits, lm_head logits for sampling).
  void gemm(const bf16* x, int64_t ldx, const bf16* w, float* y, int64_t ldy, int64_t T, int64_t N, int64_t K,
            float beta, cudaStream_t stream, Bf16Path path = Bf16Path::kAuto);

  // Block-FP8 weight (layout above), BF16 x and y, fp32 accumulation; ldx and K multiples of 8, x
  // 16-byte and W 8-byte aligned, T, N any. Our W8A16 kernel is the skinny one (T <= 64, beta 0,
  // K % 128 == 0, W 16-byte aligned) or else the 64×64 tile kernel. For T <= 64 kAuto times the
  // skinny kernel at each tiling it offers (W8A16, and on Hopper with 64- or 128-row tiles W8A8: x
  // quantized as for cuBLASLt, E4M3 wgmma; which forms, see Fp8Numerics) against cuBLASLt W8A8 on
  // the first timeable call of a shape (as gemm() does) and keeps the fastest; kKernel then runs the
  // W8A16 skinny kernel at its tiling. Under Fp8Numerics::kW8A16 kAuto runs what kKernel does.
  // Otherwise kAuto takes the cuBLASLt W8A8 path when K % 512 == 0
  // (whole 128-groups, and a K/128 that is a multiple of 4 so the checkpoint's scale grid is
  // cuBLASLt's layout as is, see gemm.cu) and cuBLASLt has an algorithm for the shape on this card
  // (probed once per shape, the answer cached with the plan); otherwise, and for kKernel, the W8A16
  // kernel. cuBLASLt 13.1 offers no algorithm for some token counts (T = 1, 33 on H100; presumably
  // every T % 4 != 0), so the W8A8 path pads small T (<= 64) to the first multiple of 4, 16, 64 the
  // heuristic accepts, computes into a runner-owned [T_pad, N] scratch and copies the T real rows into y
  // (beta != 0: y's rows are copied in first); a larger T that is not a multiple of 4 runs as
  // T - T % 64 rows directly plus the last T % 64 rows padded. The W8A8 path quantizes x into
  // runner-owned buffers that grow on first use of a larger T·K or T_pad·N (synchronising the
  // stream; not allowed while capturing a graph), and each call sets the two scale pointers on its
  // cached descriptor (host-side stores, no GPU work). Its numerics differ from the kernel's by the
  // activation quantization (~3% relative RMS on random data). x_fp8: x already quantized (T rows of
  // K, e.g. by the norm that wrote x, see Fp8Rows): the W8A8 skinny kernel reads it instead of
  // launching its own quantization (2-3 µs a call on the H100); the other paths ignore it.
  void gemm_fp8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y, int64_t ldy,
                int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream, Fp8Path path = Fp8Path::kAuto,
                const Fp8Rows* x_fp8 = nullptr);
  // The skinny kernel with a given tiling (tests and benchmarks; gemm() and gemm_fp8() choose one by
  // timing): BF16 W (scale_inv nullptr) or block-FP8 W, beta 0, 1 <= T <= 64, K % 128 == 0, x rows
  // and W 16-byte aligned; tile_rows 64, or for T <= 8 32, (BF16) 48 or (FP8) 128; 1 <= splits <= K / 128 with
  // the split partials fitting the workspace; w8a8 (FP8 W, 64 or 128 rows, Hopper): x quantized
  // as for cuBLASLt W8A8 first. Throws std::invalid_argument otherwise.
  void skinny_gemm(const bf16* x, int64_t ldx, const void* w, const float* scale_inv, bf16* y, int64_t ldy, int64_t T,
                   int64_t N, int64_t K, SkinnyTiling tiling, cudaStream_t stream, bool w8a8 = false);
  // Whether the last gemm() call ran the skinny weight-streaming kernel instead of cuBLASLt.
  bool last_gemm_skinny() const { return last_gemm_skinny_; }
  // What the last autotune (the first timeable call of a T <= 256 shape) measured per call, e.g.
  // "cublaslt 40.1 us, skinny/64x1 36.2 us, skinny/32x1 35.0 us" (rows per block x splits); empty
  // before any.
  const std::string& last_autotune() const { return last_autotune_; }
  // Sizes the W8A8 path's activation and output scratch once, for up to max_tokens rows of
  // K <= max_k and N <= max_n (a model's linears), so that serving never grows it: a growth
  // synchronises the stream and is refused while a graph is being captured.
  void reserve_fp8(int64_t max_tokens, int64_t max_k, int64_t max_n, cudaStream_t stream);
  // Bytes the FP8 scratch holds now.
  size_t fp8_scratch_bytes() const;
  // What gemm_fp8's kAuto may compute (default kW8A8); forgets the FP8 shapes' timed choices.
  void set_fp8_numerics(Fp8Numerics numerics);
  Fp8Numerics fp8_numerics() const { return fp8_numerics_; }
  // The path the last gemm_fp8 call took (kCublasLt, kKernel or kSkinnyW8A8; kAuto before the first
  // call) and, when it was one of our kernels under kAuto, why.
  Fp8Path last_fp8_path() const { return last_fp8_path_; }
  const std::string& fp8_fallback_reason() const { return fp8_fallback_reason_; }
  // The token count cuBLASLt ran for the last gemm_fp8 call's (last) cuBLASLt piece: T itself, T
  // rounded up by the padding above, or 0 when no piece ran on cuBLASLt.
  int64_t last_fp8_padded_tokens() const { return last_fp8_t_pad_; }

  size_t cached_plans() const { return plans_.size() + fp8_plans_.size(); }

 private:
  struct Plan;
  struct Operands {
    const void* x;
    const void* w;
    void* y;
    float beta;
    cudaStream_t stream;
  };
  // T, N, K, ldx, ldy, fp32 output, pointer alignment in bytes (1..16, cuBLASLt picks algorithms by it)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;
  const Plan& plan_for(const Key& key, const Operands& operands);
  void run(const void* x, int64_t ldx, const void* w, void* y, int64_t ldy, int64_t T, int64_t N, int64_t K, float beta,
           bool out_f32, cudaStream_t stream, Bf16Path path);
  // Our W8A16 kernels: the skinny one where it applies, else the tile kernel.
  void run_fp8_kernel(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                      int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream,
                      SkinnyTiling tiling = {});
  // The skinny kernel (T <= 64, beta 0; BF16 or FP8 W; W8A8 where xq is given), its split-K
  // partials in workspace_.
  void run_skinny(const void* x, int64_t ldx, const void* w, const float* scale_inv, bool fp8, void* y, int64_t ldy,
                  int64_t T, int64_t N, int64_t K, bool out_f32, cudaStream_t stream, SkinnyTiling tiling = {},
                  const uint8_t* xq = nullptr, const float* x_scales = nullptr);
  // The W8A8 skinny kernel: x quantized into the FP8 scratch (unless x_fp8 holds it), then E4M3 wgmma.
  void run_skinny_w8a8(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                       int64_t ldy, int64_t T, int64_t N, int64_t K, cudaStream_t stream, SkinnyTiling tiling,
                       const Fp8Rows* x_fp8 = nullptr);
  // Whether the W8A8 skinny kernel can run T tokens as `tiling` on this card.
  bool skinny_w8a8_supports(int64_t T, SkinnyTiling tiling) const;

  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan*> plans_;

  // FP8 plans: T, N, K, ldy, pointer alignment of W, of y.
  using Fp8Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int, int>;
  Plan* fp8_plan_for(const Fp8Key& key, const float* w_scale);
  // One piece of gemm_fp8 through cuBLASLt; false (with the reason) where it cannot run it.
  bool gemm_fp8_cublaslt(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv, bf16* y,
                         int64_t ldy, int64_t T, int64_t N, int64_t K, float beta, cudaStream_t stream,
                         std::string& reason);
  void ensure_fp8_scratch(int64_t rows, int64_t K, size_t y_elems, cudaStream_t stream);
  std::map<Fp8Key, Plan*> fp8_plans_;
  // T ≤ 64 FP8 shapes, timed on the first timeable kAuto call: each skinny form's fastest tiling
  // (W8A8's tile_rows 0 where it cannot run), which form was faster and whether it beat cuBLASLt W8A8.
  // Calls that hand in x quantized (Fp8Rows) are timed apart: their W8A8 skinny kernel launches no
  // quantization, so it may win where it loses with one (one shape can come both ways: the 9B's
  // attention o_proj and GDN out_proj).
  using SkinnyKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool>;  // T, N, K, ldx, ldy, x_fp8 given
  struct Fp8SkinnyPlan {
    SkinnyTiling w8a16;
    SkinnyTiling w8a8;
    bool w8a8_faster = false;
    bool beats_cublaslt = true;
  };
  std::map<SkinnyKey, Fp8SkinnyPlan> fp8_skinny_plans_;
  // The shape's plan, timing it first where `may_time` allows; nullptr where the skinny kernel does
  // not apply or the shape is not timed yet.
  const Fp8SkinnyPlan* fp8_skinny_plan(const bf16* x, int64_t ldx, const uint8_t* w_fp8, const float* weight_scale_inv,
                                       bf16* y, int64_t ldy, int64_t T, int64_t N, int64_t K, float beta,
                                       cudaStream_t stream, bool may_tune, const Fp8Rows* x_fp8);
  uint8_t* fp8_x_ = nullptr;       // quantized activations [T_pad, K]
  float* fp8_x_scales_ = nullptr;  // their scales [K/128, T_pad]
  size_t fp8_x_capacity_ = 0;      // elements of fp8_x_ (T_pad·K); fp8_x_scales_ holds capacity/128
  bf16* fp8_y_ = nullptr;          // output scratch [T_pad, N] of padded plans
  size_t fp8_y_capacity_ = 0;      // its elements
  // The skinny kernel's split-K tile counters (zero between calls) and the SM count it sizes by.
  unsigned* skinny_counters_ = nullptr;
  int sms_ = 0;
  bool hopper_ = false;  // sm_90: wgmma (the W8A8 skinny kernel)
  // Read before each autotune run so the operands come from memory, not L2 (1.5× L2, zeroed).
  void* l2_evict_ = nullptr;
  size_t l2_evict_bytes_ = 0;
  bool last_gemm_skinny_ = false;
  std::string last_autotune_;
  Fp8Path last_fp8_path_ = Fp8Path::kAuto;
  Fp8Numerics fp8_numerics_ = Fp8Numerics::kW8A8;
  int64_t last_fp8_t_pad_ = 0;
  std::string fp8_fallback_reason_;
};

}  // namespace cuda

}  // namespace ds::kernels
