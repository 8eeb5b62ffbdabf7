// Helpers for the GDN GPU tests and benchmarks: device buffers, seeded random BF16/fp32 data,
// poisoning and tolerance checks against the CPU reference.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.h"
#include "kernels/gdn_types.h"
#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels::gpu_test {

inline void cuda_or_throw(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// A device buffer of n elements, filled with 0xff bytes (NaN for floats and BF16) at creation so
// that anything a kernel fails to write shows up.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    cuda_or_throw(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  void poison() { cuda_or_throw(cudaMemset(ptr_, 0xff, std::max<size_t>(n_, 1) * sizeof(T)), "cudaMemset"); }
  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw std::runtime_error("DeviceBuffer::upload: size mismatch");
    cuda_or_throw(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    cuda_or_throw(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
  }
  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

// Random values already representable in BF16 (so CPU and GPU see identical inputs).
inline std::vector<float> random_bf16_values(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return to_float(to_bf16(random_floats(n, seed, lo, hi)));
}

// Compares element-wise with |got − want| <= atol + rtol·|want|; NaN never passes. Returns an
// empty string on success, else a description of the worst element.
inline std::string compare(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol) {
  if (got.size() != want.size()) return "size mismatch";
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - want[i]);
    const double limit = atol + rtol * std::abs(double(want[i]));
    const double excess = std::isnan(got[i]) ? 1e30 : err - limit;
    if (excess > 0) ++bad;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (bad == 0) return "";
  char msg[256];
  std::snprintf(msg, sizeof(msg), "%zu of %zu elements out of tolerance; worst at %zu: got %g want %g", bad, got.size(),
                worst, double(got[worst]), double(want[worst]));
  return msg;
}

// A variable-length batch in host vectors (shared with the CPU unit tests).
using Batch = test::HostBatch;

struct DeviceBatch {
  DeviceBuffer<int32_t> cu_seqlens, slots;
  DeviceBuffer<uint8_t> has_initial_state;
  GdnVarlenBatch view;

  explicit DeviceBatch(const Batch& b)
      : cu_seqlens(b.cu_seqlens),
        slots(b.slots),
        has_initial_state(b.has_initial_state),
        view{cu_seqlens.get(), slots.get(), has_initial_state.get(), b.num_seqs(), b.num_tokens()} {}
};

// Per-rank GDN shapes of the published models (dk = dv = 128): Qwen3.5/Qwen3-Next with Hk 16 and
// Hv 32 (ratio 2) or 48 (ratio 3, the 27B), split over TP 1/2/4/8, plus ratios 1 and 4.
struct NamedDims {
  const char* name;
  GdnDims dims;
};
inline std::vector<NamedDims> published_rank_dims() {
  return {
      {"Hk16_Hv32_tp1", {16, 32, 128, 128}}, {"Hk8_Hv16_tp2", {8, 16, 128, 128}},   {"Hk4_Hv8_tp4", {4, 8, 128, 128}},
      {"Hk2_Hv4_tp8", {2, 4, 128, 128}},     {"Hk16_Hv48_tp1", {16, 48, 128, 128}}, {"Hk8_Hv24_tp2", {8, 24, 128, 128}},
      {"Hk2_Hv6_tp8", {2, 6, 128, 128}},     {"Hk4_Hv4_r1", {4, 4, 128, 128}},      {"Hk2_Hv8_r4", {2, 8, 128, 128}},
  };
}

}  // namespace ds::kernels::gpu_test
