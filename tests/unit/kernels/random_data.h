// Seeded random inputs shared by the kernel unit tests (and the GDN GPU tests through
// gdn_test_util.h): the same seed gives the same values on every machine.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ds::kernels::test {

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> random_normal(size_t n, uint32_t seed, float stddev = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace ds::kernels::test
