// Helpers for the kernel GPU tests and benchmarks: owning device buffers, random BF16 data with
// its exact fp32 image (what the CPU reference sees), tolerance checks that name the worst element.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace ds::kernels::testing_util {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count_ > 0 && cudaMalloc(&ptr_, count_ * sizeof(T)) != cudaSuccess) {
      throw std::runtime_error("cudaMalloc of " + std::to_string(count_ * sizeof(T)) + " bytes failed");
    }
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), count_(other.count_) { other.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(count_, other.count_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  // All bits set: NaN for bf16/fp32, -1 for integers, so unwritten outputs are caught.
  void poison() {
    if (count_ && cudaMemset(ptr_, 0xff, count_ * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMemset failed");
  }
  void upload(const std::vector<T>& host) {
    if (host.size() != count_ ||
        cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess) {
      throw std::runtime_error("upload failed");
    }
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) {
      throw std::runtime_error(std::string("download failed: ") + cudaGetErrorString(cudaGetLastError()));
    }
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// Random values rounded to BF16: `bits` for the device, `values` (exact fp32 images) for the CPU.
struct Bf16Data {
  std::vector<bf16> bits;
  std::vector<float> values;
};

inline Bf16Data random_bf16(size_t n, uint32_t seed, float stddev = 1.f, float mean = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  Bf16Data d;
  d.bits.resize(n);
  d.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    d.bits[i] = float_to_bf16(dist(rng));
    d.values[i] = bf16_to_float(d.bits[i]);
  }
  return d;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

// |got - want| <= atol + rtol·|want| for every element (NaN fails); reports the worst offender.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<float>& want, float atol,
                                            float rtol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double allowed = atol + rtol * std::fabs(want[i]);
    const double excess = std::isnan(err) ? INFINITY : err - allowed;
    if (excess > 0) ++bad;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements off; worst [" << worst
                                       << "] got " << got[worst] << " want " << want[worst];
}

// Device Fp8Rows for T rows of K, poisoned (so rows a kernel leaves unwritten show).
struct DeviceFp8Rows {
  DeviceFp8Rows(int64_t T, int64_t K) : T(T), K(K), codes(size_t(T * K)), scales(size_t(T * K / kFp8BlockSize)) {}
  Fp8Rows rows() const { return {codes.get(), scales.get()}; }
  int64_t T, K;
  DeviceBuffer<uint8_t> codes;
  DeviceBuffer<float> scales;
};

// The FP8 rows an op wrote beside its BF16 output y [T, K] (row stride ldy) are exactly
// cpu::quantize_fp8_per_token_group(y): every code and scale.
inline ::testing::AssertionResult fp8_rows_quantize(const DeviceFp8Rows& got, const std::vector<bf16>& y, int64_t ldy) {
  std::vector<float> values(size_t(got.T * got.K));
  for (int64_t t = 0; t < got.T; ++t) {
    for (int64_t k = 0; k < got.K; ++k) values[size_t(t * got.K + k)] = bf16_to_float(y[size_t(t * ldy + k)]);
  }
  std::vector<uint8_t> codes(values.size());
  std::vector<float> scales(values.size() / kFp8BlockSize);
  cpu::quantize_fp8_per_token_group(values.data(), got.K, got.T, got.K, codes.data(), scales.data());
  const auto got_codes = got.codes.download();
  const auto got_scales = got.scales.download();
  for (size_t i = 0; i < codes.size(); ++i) {
    if (got_codes[i] != codes[i]) {
      return ::testing::AssertionFailure()
             << "code [" << i / got.K << "][" << i % got.K << "] " << int(got_codes[i]) << " want " << int(codes[i]);
    }
  }
  for (size_t i = 0; i < scales.size(); ++i) {
    if (std::memcmp(&got_scales[i], &scales[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "scale " << i << " " << got_scales[i] << " want " << scales[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ds::kernels::testing_util
